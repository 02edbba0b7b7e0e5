// Reads a timeout written the way people write it ("90s", "2m") as milliseconds.
const ms = require("ms");

function timeoutMs(text) {
  const value = ms(text);
  if (value === undefined) {
    throw new Error(`not a duration: ${text}`);
  }
  return value;
}

module.exports = { timeoutMs };
