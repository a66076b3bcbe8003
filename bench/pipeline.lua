-- wrk script: sends DEPTH requests back to back on each connection before reading the answers
-- (HTTP/1.1 pipelining). wrk counts every response. Usage: wrk -s bench/pipeline.lua URL -- DEPTH
-- (DEPTH defaults to 16). The path is the URL's.

local request_bytes

function init(args)
  local depth = tonumber(args[1]) or 16
  local one = wrk.format(nil, nil)
  request_bytes = string.rep(one, depth)
end

function request()
  return request_bytes
end
