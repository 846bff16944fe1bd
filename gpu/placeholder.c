/* placeholder so the module library is never empty; removed when the module lands */
int sq_gpu_placeholder(void);
int sq_gpu_placeholder(void) { return 0; }
