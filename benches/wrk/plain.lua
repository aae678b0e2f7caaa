-- wrk script for benches/load.sh: POSTs signed plaintext text messages.
--
--   WRK_TOKEN=T WRK_TIMESTAMP=S wrk ... -s benches/wrk/plain.lua URL -- PATH CONTENT FIRST_MSGID [fixed]
--
-- Each request gets a fresh MsgId (FIRST_MSGID, then +1 per request; threads get disjoint
-- ranges) and its own nonce (the MsgId) with its own signature, sha1 of the sorted token,
-- timestamp and nonce, as WeChat sends them: the server remembers each signed query with
-- its body, and the same query with another body is a replay it refuses. SHA-1 comes from
-- the libcrypto wrk is linked with, through LuaJIT's FFI (wrk's Lua has none of its own).
-- A repeated MsgId is a WeChat retry, answered from the dedup store without matching; with
-- `fixed` every request is FIRST_MSGID's, the same query and body, which is exactly that.

local ffi = require("ffi")
-- The low-level calls: OpenSSL 3's one-shot SHA1() looks the algorithm up on every call,
-- which made wrk, not the server, the bottleneck.
ffi.cdef [[
typedef struct { unsigned int h0, h1, h2, h3, h4, Nl, Nh, data[16]; unsigned int num; } SHA_CTX;
int SHA1_Init(SHA_CTX *c);
int SHA1_Update(SHA_CTX *c, const void *data, size_t len);
int SHA1_Final(unsigned char *md, SHA_CTX *c);
]]
local digest = ffi.new("unsigned char[20]")
local ctx = ffi.new("SHA_CTX")
local HEX = {}
for b = 0, 255 do
   HEX[b] = string.format("%02x", b)
end
local hex = {}

local function sha1_hex(s)
   ffi.C.SHA1_Init(ctx)
   ffi.C.SHA1_Update(ctx, s, #s)
   ffi.C.SHA1_Final(digest, ctx)
   for i = 0, 19 do
      hex[i + 1] = HEX[digest[i]]
   end
   return table.concat(hex)
end

local threads = 0

function setup(thread)
   thread:set("thread_index", threads)
   threads = threads + 1
end

local path, head, tail, next_id, fixed_request, token, timestamp

local function signed(id)
   local nonce = string.format("%.0f", id)
   local parts = { token, timestamp, nonce }
   table.sort(parts)
   return path .. "?signature=" .. sha1_hex(table.concat(parts)) .. "&timestamp=" .. timestamp
      .. "&nonce=" .. nonce .. "&openid=oBenchUser"
end

local function request_for(id)
   return wrk.format(nil, signed(id), nil, head .. string.format("%.0f", id) .. tail)
end

function init(args)
   path = args[1]
   local content = args[2]
   token = os.getenv("WRK_TOKEN") or error("WRK_TOKEN is not set")
   timestamp = os.getenv("WRK_TIMESTAMP") or error("WRK_TIMESTAMP is not set")
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
      fixed_request = request_for(next_id)
   end
end

function request()
   if fixed_request then
      return fixed_request
   end
   local id = next_id
   next_id = id + 1
   return request_for(id)
end
