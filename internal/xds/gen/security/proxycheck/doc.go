// Package proxycheck holds tests only: it feeds the listeners the listener generator
// makes with security policies in force (mTLS modes, RBAC, JWT) to weft-proxy's own
// listener manager, HTTP connection manager, TCP proxy and network RBAC filter, so a
// generated configuration the data plane would NACK fails here, and it sends real mTLS
// traffic over loopback through a generated inbound listener to prove the policies hold
// end to end. It is a separate package so that the generators' own tests do not depend
// on the data plane's.
package proxycheck
