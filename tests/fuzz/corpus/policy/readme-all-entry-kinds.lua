return {
  egress = {
    allow = {
      "registry.npmjs.org:443",
      "*.githubusercontent.com:443",
      "10.20.0.0/16:5432",
      "192.0.2.10",
      "[2001:db8::1]:443",
      "127.0.0.1:8000-8100",
      { "10.0.0.53:53", proto = "udp" },
    },
    intercept = { "api.github.com" },
    private = { "10.20.0.0/16" },
  },
}
