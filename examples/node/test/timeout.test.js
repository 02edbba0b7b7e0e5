const test = require("node:test");
const assert = require("node:assert");
const { timeoutMs } = require("..");

test("durations become milliseconds", () => {
  assert.strictEqual(timeoutMs("90s"), 90000);
  assert.strictEqual(timeoutMs("2m"), 120000);
});

test("anything else is refused", () => {
  assert.throws(() => timeoutMs("soon"), /not a duration: soon/);
});
