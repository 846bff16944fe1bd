/* placeholder so the module library is never empty; removed when the module lands */
int sq_queue_placeholder(void);
int sq_queue_placeholder(void) { return 0; }
