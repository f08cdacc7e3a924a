"""Frame transports: WebRTC and WebSocket peers behind one interface."""
