/* openrpc_embed.c - schema/openrpc.json, embedded at build time so that rpc.discover
 * always returns the document the binary was built with. */
__asm__(".section .rodata\n"
        ".global osb_openrpc_json\n"
        ".type osb_openrpc_json, @object\n"
        "osb_openrpc_json:\n"
        ".incbin \"schema/openrpc.json\"\n"
        ".byte 0\n"
        ".size osb_openrpc_json, . - osb_openrpc_json\n"
        ".previous\n");
