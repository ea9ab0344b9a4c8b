// A proxyless gRPC client in Node.js (@grpc/grpc-js with @grpc/grpc-js-xds's xds:/// resolver),
// the twin of grpc_xds_client.py: `node grpc_xds_client.js TARGET METHOD COUNT` makes COUNT
// unary calls of pkg.Echo/METHOD (raw bytes) and prints one JSON line: answers and errors,
// counted. GRPC_XDS_BOOTSTRAP names its bootstrap. NODE_PATH points at the installed packages.
const grpc = require("@grpc/grpc-js");
require("@grpc/grpc-js-xds").register();

const [target, method, countText] = process.argv.slice(2);
const count = Number(countText);
const client = new grpc.Client(target, grpc.credentials.createInsecure());
const identity = (data) => data;

function call(payload, deadlineSeconds, waitForReady) {
  return new Promise((resolve) => {
    const options = { deadline: Date.now() + deadlineSeconds * 1000, waitForReady };
    client.makeUnaryRequest(
      `/pkg.Echo/${method}`, identity, identity, Buffer.from(payload), new grpc.Metadata(),
      options, (error, answer) => resolve(error ? { error: grpc.status[error.code], details: error.details } : { answer: answer.toString() }),
    );
  });
}

(async () => {
  const answers = {};
  const errors = {};
  const ready = await call("ready", 30, true); // resolved
  if (ready.error) errors[`ready:${ready.error}:${ready.details}`] = 1;
  for (let index = 0; index < count; index += 1) {
    const outcome = await call(`call-${index}`, 10, false);
    if (outcome.error) errors[outcome.error] = (errors[outcome.error] || 0) + 1;
    else answers[outcome.answer] = (answers[outcome.answer] || 0) + 1;
  }
  process.stdout.write(`${JSON.stringify({ answers, errors })}\n`);
  client.close();
  process.exit(0);
})();
