// Package tlsctx turns Envoy's DownstreamTlsContext and UpstreamTlsContext into
// crypto/tls configs, with certificates and validation contexts inline or named secrets
// from SDS (static_resources.secrets or the ADS stream). A rotated secret applies to the
// next handshake; connections already up keep theirs.
package tlsctx

// API the listener, the upstream clusters and the xDS glue code against. Keep these
// signatures; add what you need beside them.
//
//	type Store struct{ ... }            // named secrets; safe for concurrent use
//	func NewStore() *Store
//	// Update replaces the SDS secrets (state of the world for the names subscribed);
//	// validates each (PEM parses, key matches cert) and changes nothing on error.
//	func (s *Store) Update(secrets []*tlsv3.Secret) error
//	// AddStatic adds secrets from the bootstrap's static_resources; they are never removed.
//	func (s *Store) AddStatic(secrets []*tlsv3.Secret) error
//	func (s *Store) Names() []string
//
//	// Server builds the config for a DownstreamTlsContext: certificate chosen per
//	// handshake from the store (GetConfigForClient), require_client_certificate,
//	// validation context (trusted CA, match_typed_subject_alt_names / SAN matchers),
//	// alpn_protocols from common_tls_context.
//	func Server(ctx *tlsv3.DownstreamTlsContext, s *Store) (*tls.Config, error)
//	// Client builds the config for an UpstreamTlsContext: sni, alpn, client
//	// certificate from the store per handshake, server validation with SAN matching.
//	func Client(ctx *tlsv3.UpstreamTlsContext, s *Store) (*tls.Config, error)
//	// SecretNames lists the SDS secret names a context refers to.
//	func SecretNames(common *tlsv3.CommonTlsContext) []string
//	// PeerPrincipal is the first URI SAN of the peer's leaf certificate (the SPIFFE
//	// ID), "" when there is none.
//	func PeerPrincipal(cs *tls.ConnectionState) string
