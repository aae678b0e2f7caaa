-- wrk script for benches/load.sh: POSTs a signed plaintext text message.
--
--   wrk ... -s benches/wrk/plain.lua URL -- PATH_AND_QUERY CONTENT FIRST_MSGID [fixed]
--
-- PATH_AND_QUERY carries a signature over (token, timestamp, nonce) only, so with
-- `--max-age 0` one signed query serves every request. Each request gets a fresh MsgId
-- (FIRST_MSGID, then +1 per request; threads get disjoint ranges): a repeated MsgId is a
-- WeChat retry, answered from the dedup store without matching. With `fixed` every request
-- carries FIRST_MSGID, which is exactly that retry path.

local threads = 0

function setup(thread)
   thread:set("thread_index", threads)
   threads = threads + 1
end

local path, head, tail, next_id, fixed_request

function init(args)
   path = args[1]
   local content = args[2]
   -- A 10^9 range per thread; LuaJIT numbers are doubles, exact up to 2^53.
   next_id = tonumber(args[3]) + (thread_index or 0) * 1e9
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "text/xml"
   head = "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
      .. "<FromUserName><![CDATA[oBenchUser]]></FromUserName>"
      .. "<CreateTime>1795737600</CreateTime><MsgType><![CDATA[text]]></MsgType>"
      .. "<Content><![CDATA[" .. content .. "]]></Content><MsgId>"
   tail = "</MsgId></xml>"
   if args[4] == "fixed" then
      fixed_request = wrk.format(nil, path, nil, head .. string.format("%.0f", next_id) .. tail)
   end
end

function request()
   if fixed_request then
      return fixed_request
   end
   local id = next_id
   next_id = id + 1
   return wrk.format(nil, path, nil, head .. string.format("%.0f", id) .. tail)
end
