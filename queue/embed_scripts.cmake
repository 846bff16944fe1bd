# Writes OUT: a C file with every DIR/*.lua as a string, and a name -> source table. A script's
# effective source is DIR/lib/prelude.lua (the shared helpers) followed by the script's file; the
# Python side (segq.client.load_script) builds the same text.
file(GLOB scripts ${DIR}/*.lua)
list(SORT scripts)
file(READ ${DIR}/lib/prelude.lua prelude_hex HEX)
set(body "/* Generated from the queue/scripts Lua files by embed_scripts.cmake. Do not edit. */\n#include <stddef.h>\n")
set(table "")
foreach(f ${scripts})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${prelude_hex}${hex}")
  string(APPEND body "static const char script_${name}[] = {${hex}0x00};\n")
  string(APPEND table "  {\"${name}\", script_${name}},\n")
endforeach()
string(APPEND body "const struct sq_script_entry { const char *name; const char *source; } sq_queue_scripts[] = {\n${table}  {NULL, NULL}};\n")
file(WRITE ${OUT} "${body}")
