-- wrk script: each request carries the next token of a file, round robin, starting at an
-- offset (so that rounds of "every token new" do not reuse each other's tokens), and with a
-- third argument "paths" a path of its own as well; a fourth argument sends each token that
-- many times in a row (tokengate caches a token on its second verification); a fifth makes
-- each connection pause that many milliseconds before its next request (a paced load); the summary
-- line at the end is JSON (requests/s, latency percentiles in microseconds, errors).
local tokens = {}
local index = 0
local vary_paths = false
local repeats = 1
local sent = 0

function init(args)
  local path = args[1]
  if path and path ~= "" then
    for line in io.lines(path) do
      if #line > 0 then tokens[#tokens + 1] = line end
    end
  end
  index = tonumber(args[2] or "0") or 0
  vary_paths = args[3] == "paths"
  repeats = math.max(1, tonumber(args[4] or "1") or 1)
  local pause = tonumber(args[5] or "")
  if pause then
    delay = function() return pause end
  end
end

function request()
  if #tokens == 0 then
    return wrk.format("GET", wrk.path)
  end
  if sent % repeats == 0 then index = index % #tokens + 1 end
  sent = sent + 1
  -- With "paths", every request also has a path of its own (wrk.path .. "/" .. a number).
  local path = vary_paths and (wrk.path .. "/" .. index) or wrk.path
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[index] })
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_us": %d, "p99_us": %d, "p999_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
