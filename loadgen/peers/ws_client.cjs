// Node `ws` peer (CommonJS: found through NODE_PATH=.peers/node_modules) for `make bench-client`: N WebSocket clients on one URL, each message parsed as JSON
// (as pushbench's client does) and counted. Prints the count when SIGTERM arrives, then exits.
const WebSocket = require("ws");

const [url, n] = [process.argv[2], Number(process.argv[3])];
let received = 0;
let bad = 0;
for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on("message", (data) => {
    const event = JSON.parse(data);
    if (typeof event.seq === "number") received++;
    else bad++;
  });
  ws.on("error", (err) => {
    console.error(`ws error: ${err.message}`);
    process.exit(1);
  });
}
process.on("SIGTERM", () => {
  console.log(JSON.stringify({ received, bad }));
  process.exit(0);
});
