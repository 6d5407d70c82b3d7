-- sessions_all.lua - GET /sessions through the balancer: every live node's sessions.
-- Loaded by the configuration gen-haproxy-cfg writes (unless --no-merge). The only code in
-- the cluster set-up: HAProxy cannot merge answers by configuration alone. It asks each
-- server of the opensandbox_http_pool backend that its health checks hold UP for its
-- GET /sessions (a JSON array of SessionInfo, WIRE.md) and answers one array holding all of
-- them, in node order. The Authorization header goes along (nodes may require an API key).
-- A node that fails or refuses is left out (the list is of the nodes that answered); when
-- none answers the reply is that failure (401 from every node, or 503).

local POOL = "opensandbox_http_pool"
local TIMEOUT_MS = 5000

-- The elements of a JSON array's text, without its brackets ("" when empty); nil when the
-- text is not an array.
local function array_items(body)
  local inner = body and body:match("^%s*%[(.*)%]%s*$")
  if not inner then
    return nil
  end
  return inner:match("^%s*(.-)%s*$")
end

core.register_service("opensandbox_sessions_all", "http", function(applet)
  local auth = applet.headers["authorization"]
  local headers = {}
  if auth and auth[0] then
    headers["authorization"] = { auth[0] }
  end
  local parts, answered, last_status = {}, 0, 503
  local backend = core.backends[POOL]
  local names = {}
  for name in pairs(backend and backend.servers or {}) do
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local srv = backend.servers[name]
    local st = srv:get_stats()
    if st and st.status and st.status:sub(1, 2) == "UP" then
      local hc = core.httpclient()
      local res = hc:get{ url = "http://" .. srv:get_addr() .. "/sessions", headers = headers,
                          timeout = TIMEOUT_MS }
      local items = res and res.status == 200 and array_items(res.body)
      if items then
        answered = answered + 1
        if items ~= "" then
          parts[#parts + 1] = items
        end
      elseif res and res.status and res.status > 0 then
        last_status = res.status
      end
    end
  end
  local status, body = 200, "[" .. table.concat(parts, ",") .. "]"
  if answered == 0 then
    status = last_status
    body = status == 401 and "Unauthorized" or "no opensandboxd node answered"
  end
  applet:set_status(status)
  applet:add_header("content-type", status == 200 and "application/json" or "text/plain")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)
