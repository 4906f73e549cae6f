"""Developer tools that are not part of the servers: the browser header profile recorder and the Autobahn WebSocket conformance run."""
