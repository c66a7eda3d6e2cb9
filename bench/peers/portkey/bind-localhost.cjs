// Preloaded with `node --require` by bench/peers.py: Portkey's start-server.js calls
// serve({fetch, port}) without a hostname, so Node would listen on every interface.
// The benchmark binds every peer to 127.0.0.1: a TCP listen() without a host gets it.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  if (typeof port === "number" || (typeof port === "string" && /^\d+$/.test(port))) {
    // listen(port, undefined, cb) as @hono/node-server calls it, or listen(port[, cb]).
    if (args[1] === undefined || args[1] === null) args[1] = "127.0.0.1";
    else if (typeof args[1] === "function") args.splice(1, 0, "127.0.0.1");
  } else if (port && typeof port === "object" && port.path === undefined && port.host === undefined) {
    args[0] = { ...port, host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
