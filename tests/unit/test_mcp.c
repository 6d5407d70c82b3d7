/* test_mcp.c - MCP mode's pure parts: the first-message switch, the tools made from the
 * embedded schema and the bridge's method table, and the texts of tool results. */
#include <string.h>

#include "bridge/methods/methods.h"
#include "mcp/mcp.h"
#include "mcp/mcp_int.h"
#include "test.h"

static int detect(const char *s) {
  return mcp_detect(s, strlen(s));
}

TEST(first_message_switch_tells_mcp_from_json_rpc) {
  ASSERT(detect("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
                "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{}}}"));
  ASSERT(detect("{\"jsonrpc\":\"2.0\",\"id\":\"d\",\"method\":\"server/discover\"}"));
  ASSERT(detect("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"_meta\":"
                "{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}"));
  /* An LSP initialize: processId and capabilities, no protocolVersion. */
  ASSERT(!detect("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
                 "{\"processId\":42,\"rootUri\":null,\"capabilities\":{}}}"));
  ASSERT(!detect("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":null}"));
  ASSERT(!detect("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"sandbox/create\"}"));
  ASSERT(!detect("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}"));
  ASSERT(!detect("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\"}]"));
  ASSERT(!detect("not json"));
  ASSERT(!detect("{\"method\":\"initialize\",\"params\":{\"protocolVersion\":7}}"));
}

TEST(tools_follow_the_schema_with_sandbox_id_optional) {
  struct mcp_tools t;
  struct osb_err err = OSB_ERR_INIT;
  ASSERT_EQ(mcp_tools_build(&t, methods_table, methods_count, 1, &err), 0);
  ASSERT(t.n >= 14);
  ASSERT_STR_EQ(t.v[0].name, "sandbox_create");
  const struct mcp_tool *run = mcp_tools_find(&t, "sandbox_run");
  ASSERT(run && run->is_run && run->takes_sandbox);
  ASSERT(!mcp_tools_find(&t, "initialize"));
  ASSERT(!mcp_tools_find(&t, "server_health"));
  json_object *list = mcp_tools_list(&t, MCP_V2025_06_18);
  ASSERT_EQ(json_object_array_length(list), t.n);
  for (size_t i = 0; i < t.n; i++) {
    json_object *def = json_object_array_get_idx(list, i), *in, *req = NULL;
    ASSERT(json_object_object_get_ex(def, "inputSchema", &in));
    if (json_object_object_get_ex(in, "required", &req)) {
      for (size_t k = 0; k < json_object_array_length(req); k++)
        ASSERT(strcmp(json_object_get_string(json_object_array_get_idx(req, k)), "sandboxId"));
    }
    ASSERT(json_object_object_get_ex(def, "annotations", NULL));
  }
  json_object *old = mcp_tools_list(&t, MCP_V2024_11_05);
  ASSERT(!json_object_object_get_ex(json_object_array_get_idx(old, 0), "annotations", NULL));
  ASSERT(!json_object_object_get_ex(json_object_array_get_idx(old, 0), "outputSchema", NULL));
  json_object_put(old);
  json_object_put(list);
  mcp_tools_free(&t);
}

/* With exec sessions sandbox_run yields (its outputSchema allows running, execId and a null
 * exitCode); without them the exec tools are left out and sandbox_run waits. */
TEST(exec_tools_and_the_yield_follow_the_backend) {
  struct osb_err err = OSB_ERR_INIT;
  for (int has_exec = 0; has_exec <= 1; has_exec++) {
    struct mcp_tools t;
    ASSERT_EQ(mcp_tools_build(&t, methods_table, methods_count, has_exec, &err), 0);
    ASSERT_EQ(t.yields, has_exec);
    ASSERT_EQ(mcp_tools_find(&t, "exec_read") != NULL, has_exec);
    ASSERT_EQ(mcp_tools_find(&t, "exec_start") != NULL, has_exec);
    const struct mcp_tool *run = mcp_tools_find(&t, "sandbox_run");
    json_object *out = NULL, *props = NULL, *exit_code = NULL, *type = NULL;
    ASSERT(json_object_object_get_ex(run->def, "outputSchema", &out));
    ASSERT(json_object_object_get_ex(out, "properties", &props));
    ASSERT_EQ(json_object_object_get_ex(props, "running", NULL), has_exec);
    ASSERT_EQ(json_object_object_get_ex(props, "execId", NULL), has_exec);
    ASSERT(json_object_object_get_ex(props, "exitCode", &exit_code));
    ASSERT(json_object_object_get_ex(exit_code, "type", &type));
    ASSERT_EQ(json_object_is_type(type, json_type_array), has_exec); /* ["integer","null"] */
    mcp_tools_free(&t);
  }
}

TEST(run_result_text_puts_output_before_the_exit_code) {
  struct mcp_tools t;
  struct osb_err err = OSB_ERR_INIT;
  ASSERT_EQ(mcp_tools_build(&t, methods_table, methods_count, 1, &err), 0);
  const struct mcp_tool *run = mcp_tools_find(&t, "sandbox_run");
  json_object *res = json_tokener_parse("{\"stdout\":\"hi\",\"stderr\":\"oops\\n\",\"exitCode\":3,"
                                        "\"signal\":0,\"success\":false,\"truncated\":false}");
  json_object *r = mcp_tool_result(run, res, MCP_V2025_11_25);
  json_object *content, *sc, *ie;
  ASSERT(json_object_object_get_ex(r, "content", &content));
  ASSERT_STR_EQ(json_object_get_string(json_object_object_get(json_object_array_get_idx(content, 0),
                                                              "text")),
                "stdout:\nhi\nstderr:\noops\nexit code: 3");
  ASSERT(json_object_object_get_ex(r, "structuredContent", &sc));
  ASSERT(json_object_object_get_ex(r, "isError", &ie) && !json_object_get_boolean(ie));
  json_object_put(r);
  struct osb_err nf = OSB_ERR_INIT;
  osb_err_set(&nf, OSB_ERR_NOT_FOUND, NULL, "sandbox x not found");
  r = mcp_tool_error(run, &nf);
  ASSERT(json_object_object_get_ex(r, "isError", &ie) && json_object_get_boolean(ie));
  json_object_object_get_ex(r, "content", &content);
  ASSERT(strstr(json_object_get_string(json_object_object_get(json_object_array_get_idx(content, 0),
                                                              "text")),
                "sandbox_create"));
  json_object_put(r);
  osb_err_clear(&nf);
  mcp_tools_free(&t);
}

int main(void) {
  RUN(first_message_switch_tells_mcp_from_json_rpc);
  RUN(tools_follow_the_schema_with_sandbox_id_optional);
  RUN(exec_tools_and_the_yield_follow_the_backend);
  RUN(run_result_text_puts_output_before_the_exit_code);
  TEST_MAIN_END();
}
