-- entries built at load time with the string and table libraries
local hosts = {}
for _, h in ipairs({ "a", "b", "c" }) do hosts[#hosts + 1] = h .. ".example.com:443" end
local ports = string.format("%d-%d", 8000, 8010)
table.insert(hosts, "10.1.0.0/24:" .. ports)
local ok, f = pcall(load, "return 'x.test'")
if ok and f then hosts[#hosts + 1] = f() end
return { egress = { allow = hosts, intercept = { ("API.Example.ORG."):lower() } } }
