// Drives the official twilio-node library against settingsd's HTTP bridge.
//
// Run by tests/api/twilio_libraries.rs with NODE_PATH pointing at the
// node_modules that scripts/test installs. Prints one JSON object: what each
// call returned or raised, for the Rust test to check.
//
// usage: node twilio_node.js BASE_URL ACCOUNT_SID AUTH_TOKEN API_KEY_SID API_KEY_SECRET RESOURCE
//
// RESOURCE is recording_settings (client.video.v1.recordingSettings()) or
// composition_settings (client.video.v1.compositionSettings()).
"use strict";

const twilio = require("twilio");

const FIELDS = [
  "accountSid",
  "friendlyName",
  "awsCredentialsSid",
  "awsS3Url",
  "awsStorageEnabled",
  "encryptionKeySid",
  "encryptionEnabled",
  "url",
];

function settings(resource, baseUrl, username, password, accountSid) {
  const client = twilio(username, password, accountSid ? { accountSid } : {});
  client.video.baseUrl = baseUrl;
  const method = resource.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
  return client.video.v1[method]();
}

async function attempt(call) {
  try {
    const instance = await call();
    return { ok: Object.fromEntries(FIELDS.map((f) => [f, instance[f] ?? null])) };
  } catch (e) {
    if (e.status === undefined) throw e;
    return { status: e.status, code: e.code, message: e.message };
  }
}

async function main() {
  const [baseUrl, account, token, key, secret, resource] = process.argv.slice(2);
  const byToken = settings(resource, baseUrl, account, token);
  const byKey = settings(resource, baseUrl, key, secret, account);
  const wrong = settings(resource, baseUrl, account, "wrong-token");
  const results = {
    fetch_default: await attempt(() => byToken.fetch()),
    create: await attempt(() =>
      byToken.create({
        friendlyName: "My Settings",
        encryptionKeySid: "CR" + "b".repeat(32),
        encryptionEnabled: true,
      })
    ),
    fetch_by_key: await attempt(() => byKey.fetch()),
    create_by_key: await attempt(() => byKey.create({ friendlyName: "Set By Key" })),
    missing_friendly_name: await attempt(() => byToken.create({ friendlyName: "" })),
    wrong_token: await attempt(() => wrong.fetch()),
  };
  console.log(JSON.stringify(results));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
