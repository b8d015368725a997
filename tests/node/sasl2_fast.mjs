// A real client's SASL2, Bind2 and FAST login against xmppd, driven by tests/e2e/test_sasl2.py.
//
// Usage: node sasl2_fast.mjs PORT USER PASSWORD PEER_JID USER_AGENT_ID
// Logs in over direct TLS with SASL2 + Bind2 and asks for a FAST token, disconnects, then
// logs in again with the token only (a wrong password is given, so only FAST can succeed),
// sends a message to PEER_JID and waits for one back. Each step prints one JSON line on
// stderr (XMPPJS_TRACE=1 adds every element sent and received).

import { client, xml } from "@xmpp/client";

const [port, username, password, peer, uaId] = process.argv.slice(2);
const say = (obj) => process.stderr.write(JSON.stringify(obj) + "\n");
let saved = null;

function connect(pass) {
  const xmpp = client({
    service: `xmpps://127.0.0.1:${port}`,
    domain: "localhost",
    username,
    password: pass,
    resource: "xmppjs",
    // A loaded machine running a debug build answers slower than xmpp.js's 2 s default.
    timeout: 60_000,
    userAgent: xml(
      "user-agent",
      { id: uaId },
      xml("software", {}, "xmpp.js"),
      xml("device", {}, "e2e"),
    ),
  });
  xmpp.reconnect.stop();
  xmpp.fast.saveToken = async (t) => {
    saved = t;
  };
  xmpp.fast.fetchToken = async () => saved;
  const sent = [];
  xmpp.on("send", (el) => sent.push(el));
  if (process.env.XMPPJS_TRACE) {
    xmpp.on("send", (el) => say({ step: "trace-out", xml: String(el) }));
    xmpp.on("element", (el) => say({ step: "trace-in", xml: String(el) }));
  }
  xmpp.on("error", (err) => say({ step: "error", error: String(err) }));
  return { xmpp, sent };
}

// Connection.start() attaches its wait for the server's stream header only after its own
// header's write completes; a server that answers sooner than that callback runs is missed.
// Waiting for "online" from before the connection opens does not depend on that order.
async function start(xmpp) {
  const online = new Promise((resolve, reject) => {
    xmpp.once("online", resolve);
    xmpp.once("error", reject);
  });
  await xmpp.connect(xmpp.options.service);
  xmpp.open({ domain: xmpp.options.domain, lang: xmpp.options.lang }).catch(() => {});
  return online;
}

function authenticated(sent) {
  const auth = sent.find((el) => el.name === "authenticate");
  return auth?.attrs.mechanism;
}

async function main() {
  const first = connect(password);
  const jid1 = await start(first.xmpp);
  say({
    step: "password",
    jid: String(jid1),
    mechanism: authenticated(first.sent),
    token: saved !== null,
  });
  await first.xmpp.stop();

  const second = connect("not the password");
  const received = new Promise((resolve) => {
    second.xmpp.on("stanza", (st) => {
      if (st.is("message") && st.getChildText("body")) resolve(st.getChildText("body"));
    });
  });
  const jid2 = await start(second.xmpp);
  say({
    step: "fast",
    jid: String(jid2),
    mechanism: authenticated(second.sent),
    sm: second.xmpp.streamManagement.enabled,
  });
  await second.xmpp.send(
    xml("message", { to: peer, type: "chat", id: "js1" }, xml("body", {}, "hello from xmpp.js")),
  );
  const body = await received;
  say({ step: "received", body });
  await second.xmpp.stop();
}

main().then(
  () => process.exit(0),
  (err) => {
    say({ step: "failed", error: String(err?.stack ?? err) });
    process.exit(1);
  },
);
