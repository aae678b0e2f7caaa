-- wrk script for benches/load.sh: POSTs to the account's service (src/bin/baseline.rs,
-- `/service/…`) the JSON body wxrules' `call` sends for the `call` workload's message, so
-- that calling the service directly and through wxrules carry the same load.
--
--   wrk ... -s benches/wrk/service.lua URL -- PATH

function init(args)
   wrk.method = "POST"
   wrk.path = args[1]
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Accept"] = "application/json"
   wrk.body = '{"Content":"查单20261130","CreateTime":"1795737600","FromUserName":"oBenchUser",'
      .. '"MsgId":"1000000000","MsgType":"text","ToUserName":"gh_bench",'
      .. '"captures":{"0":"查单20261130","1":"20261130","order":"20261130"},"rule":"bench-call"}'
end
