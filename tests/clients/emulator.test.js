// A user's Jest suite against settingsd as a Twilio emulator: the README's
// Jest example, run for real by tests/api/emulator.rs.
//
// Environment: SETTINGSD (the settingsd binary), SETTINGSD_GRPC_ADDR (its gRPC
// address, for `settingsd admin`), SETTINGSD_HTTP_URL (its HTTP bridge).
const { execFileSync } = require("child_process");
const twilio = require("twilio");

const admin = (...args) =>
  execFileSync(
    process.env.SETTINGSD,
    ["admin", "--grpc-addr", process.env.SETTINGSD_GRPC_ADDR, ...args],
    { encoding: "utf8" },
  );
const client = twilio("AC" + "8".repeat(32), "any-token");
client.video.baseUrl = process.env.SETTINGSD_HTTP_URL;
const settings = () => client.video.v1.recordingSettings();

beforeEach(() => {
  admin("reset", "--all");
  admin("clear-faults");
});

test("a write is read back", async () => {
  await settings().create({ friendlyName: "from jest" });
  expect((await settings().fetch()).friendlyName).toBe("from jest");
});

test("the previous test left nothing behind", async () => {
  expect((await settings().fetch()).friendlyName).toBeNull();
});

test("an injected 503 reaches the client, and clearing it lets the retry succeed", async () => {
  admin("inject-fault", "--resource", "recording", "--method", "set", "--count", "1");
  await expect(settings().create({ friendlyName: "refused" })).rejects.toMatchObject({
    status: 503,
    code: 20503,
  });
  admin("clear-faults");
  await settings().create({ friendlyName: "accepted" });
  expect((await settings().fetch()).friendlyName).toBe("accepted");
});
