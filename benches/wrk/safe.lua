-- wrk script for benches/load.sh: POSTs safe-mode (encrypted) text messages prepared by
-- benches/wrk/make_safe.py.
--
--   wrk ... -s benches/wrk/safe.lua URL -- REQUESTS_FILE
--
-- msg_signature covers the Encrypt payload and the MsgId is inside it, so every distinct
-- MsgId needs its own ciphertext and signature, and wrk's Lua has no SHA-1 or AES. Each line
-- of REQUESTS_FILE is `PATH_AND_QUERY<TAB>BODY`, one MsgId per line; the script sends them
-- in order and starts over at the end (a repeat is a retry: load.sh reports how many the
-- server saw, and sizes the file so that there are none). With several threads each one
-- starts at its own offset.

local threads = 0

function setup(thread)
   thread:set("thread_index", threads)
   threads = threads + 1
end

local requests, count, i

function init(args)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "text/xml"
   requests = {}
   count = 0
   for line in io.lines(args[1]) do
      local path, body = line:match("^([^\t]*)\t(.*)$")
      if path then
         count = count + 1
         requests[count] = wrk.format(nil, path, nil, body)
      end
   end
   if count == 0 then
      error("no requests in " .. args[1])
   end
   -- Threads start a 1/8 of the file apart, so they do not send the same MsgId together.
   i = math.floor((thread_index or 0) * count / 8) % count
end

function request()
   i = i + 1
   if i > count then
      i = 1
   end
   return requests[i]
end
