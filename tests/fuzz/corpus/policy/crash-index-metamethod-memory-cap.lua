local t = setmetatable({}, { __index = function(t, k)
  if k == "egress" then local s = {} for i = 1, 1e9 do s[i] = ("x"):rep(100) end end
end })
return t