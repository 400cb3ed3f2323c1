-- An address-only policy: a database subnet, one internal service, an IPv6 API.
-- Everything not named here is denied in the kernel.
return {
  egress = {
    allow = {
      "10.20.0.0/16:5432",
      "10.30.1.7:8080-8089",
      { "10.0.0.53:53", proto = "udp" },
      "[2001:db8::10]:443",
    },
  },
}
