/* placeholder so the module library is never empty; removed when the module lands */
int sq_proto_placeholder(void);
int sq_proto_placeholder(void) { return 0; }
