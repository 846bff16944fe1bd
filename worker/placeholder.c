/* placeholder so the module library is never empty; removed when the module lands */
int sq_worker_placeholder(void);
int sq_worker_placeholder(void) { return 0; }
