// Package interop holds tests only: it serves what the listener and route generators
// make for a proxyless gRPC client over go-control-plane's ADS server and lets grpc-go's
// own xDS resolver use it against real gRPC backends on 127.0.0.1, proving that grpc-go
// accepts the resources (a NACK fails the test) and routes as the VirtualServices say.
// It is a separate package so that the generators' tests do not link grpc-go's xDS stack.
package interop
