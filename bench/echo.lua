-- wrk script: POSTs a body of SIZE bytes (default 16384) to the URL's path, which echoes it.
-- Usage: wrk -s bench/echo.lua http://127.0.0.1:PORT/echo -- SIZE

local request_bytes

function init(args)
  local size = tonumber(args[1]) or 16384
  request_bytes = wrk.format("POST", nil, { ["Content-Type"] = "application/octet-stream" },
    string.rep("a", size))
end

function request()
  return request_bytes
end
