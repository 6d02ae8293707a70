#!/usr/bin/env node
// A node-dtls-client peer for iotdtls's interop tests (tests/test_interop_node.py).
//
//   node client.js HOST PORT [--identity ID] [--psk-hex HEX] [--count N] [--resend MS]
//                            [--handshake-timeout MS] [--deadline MS]
//
// Connects with TLS_PSK_WITH_AES_128_CCM_8 only (RFC 6655), then sends N lines
// "message <i> from node" one after another; each is sent again every --resend ms until its
// echo comes back (DTLS does not retransmit application data, RFC 6347 section 4.1). Prints
// "connected", "received: <text>" for every datagram and "done" after close_notify; exits 0.
// Any failure prints one line "error: <what>" on stderr and exits 1; after --deadline ms it
// exits 2. The identity and hex key also come from NODE_DTLS_IDENTITY / NODE_DTLS_PSK_HEX;
// the key is never printed.
"use strict";

const dtls = require("node-dtls-client").dtls;

function fail(message, status = 1) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(status);
}

function parse(argv) {
  const options = {
    identity: process.env.NODE_DTLS_IDENTITY || "Client_identity",
    pskHex: process.env.NODE_DTLS_PSK_HEX || "",
    count: 3,
    resend: 1000,
    handshakeTimeout: 5000,
    deadline: 15000,
  };
  const positional = [];
  const names = {
    "--identity": "identity", "--psk-hex": "pskHex", "--count": "count",
    "--resend": "resend", "--handshake-timeout": "handshakeTimeout", "--deadline": "deadline",
  };
  for (let i = 0; i < argv.length; i++) {
    const name = names[argv[i]];
    if (name === undefined) {
      positional.push(argv[i]);
    } else if (i + 1 >= argv.length) {
      fail(`${argv[i]} needs a value`);
    } else {
      const value = argv[++i];
      options[name] = typeof options[name] === "number" ? Number(value) : value;
      if (Number.isNaN(options[name])) fail(`${argv[i - 1]} needs a number, got ${value}`);
    }
  }
  if (positional.length !== 2) fail("usage: client.js HOST PORT [options]");
  [options.host, options.port] = [positional[0], Number(positional[1])];
  if (!Number.isInteger(options.port)) fail(`PORT must be a number, got ${positional[1]}`);
  if (!/^([0-9a-fA-F]{2})+$/.test(options.pskHex)) {
    fail("the PSK must be given in hex (--psk-hex or NODE_DTLS_PSK_HEX)");
  }
  return options;
}

const options = parse(process.argv.slice(2));
setTimeout(() => fail(`no result within ${options.deadline} ms`, 2), options.deadline);

// node-dtls-client takes the key as a string and turns it into bytes with Buffer.from(key,
// "ascii"), which keeps the low 8 bits of each character: a latin1 string carries any bytes.
const psk = {};
psk[options.identity] = Buffer.from(options.pskHex, "hex").toString("latin1");

const socket = dtls.createSocket({
  type: "udp4",
  address: options.host,
  port: options.port,
  psk: psk,
  timeout: options.handshakeTimeout,
  ciphers: ["TLS_PSK_WITH_AES_128_CCM_8"],
});

let next = 0;
let resendTimer = null;
let connected = false;
let finished = false;

function sendCurrent() {
  socket.send(Buffer.from(`message ${next} from node`));
  resendTimer = setTimeout(sendCurrent, options.resend);
}

socket.on("connected", () => {
  connected = true;
  console.log("connected");
  sendCurrent();
});

socket.on("message", (data) => {
  const text = data.toString("utf8");
  console.log(`received: ${text}`);
  if (!connected || text !== `message ${next} from node`) return;
  clearTimeout(resendTimer);
  next += 1;
  if (next < options.count) {
    sendCurrent();
  } else {
    finished = true;
    socket.close(() => {
      console.log("done");
      process.exit(0);
    });
  }
});

socket.on("error", (error) => fail(error.message));
socket.on("close", () => {
  if (!finished) fail(`the connection was closed after ${next} of ${options.count} echoes`);
});
