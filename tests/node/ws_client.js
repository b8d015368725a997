// A line-driven XMPP client over WebSocket (@xmpp/client), for the end-to-end tests.
//
//   node ws_client.js SERVICE DOMAIN USERNAME PASSWORD
//
// Prints one JSON object per line on stdout: {"online": JID} once logged in, {"message":
// {"from", "body"}} for each chat message received, {"error": TEXT} when the connection fails
// (then exits 1), {"offline": true} after a clean close. Reads commands on stdin, one per line:
// "send TO BODY" sends a chat message; end of input closes the stream and exits.
"use strict";

const readline = require("readline");

// @xmpp/client 0.14 takes WebSocket from the global scope, which Node.js has from version 22;
// on older ones the ws package provides the same API.
if (typeof globalThis.WebSocket === "undefined") {
  globalThis.WebSocket = require("ws");
}

const { client, xml } = require("@xmpp/client");

const [service, domain, username, password] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const xmpp = client({ service, domain, username, password, resource: "ws" });
xmpp.reconnect.stop();

xmpp.on("error", (err) => {
  say({ error: String(err && (err.condition || err.message || err)) });
  process.exit(1);
});

xmpp.on("stanza", (stanza) => {
  if (stanza.is("message") && stanza.getChild("body")) {
    say({ message: { from: stanza.attrs.from, body: stanza.getChildText("body") } });
  }
});

xmpp.on("online", async (address) => {
  await xmpp.send(xml("presence"));
  say({ online: address.toString() });
});

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const [command, to, ...rest] = line.split(" ");
  if (command === "send") {
    await xmpp.send(xml("message", { to, type: "chat" }, xml("body", {}, rest.join(" "))));
    say({ sent: to });
  }
});
lines.on("close", async () => {
  await xmpp.stop();
  say({ offline: true });
  process.exit(0);
});

xmpp.start().catch((err) => {
  say({ error: String(err && (err.condition || err.message || err)) });
  process.exit(1);
});
