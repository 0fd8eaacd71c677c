//! Herald's standalone server.
//!
//! Nothing here yet: the mio transport, protocols, auth and the `herald`
//! binary arrive with the server issue. Until then the README's run command
//! prints the ring benchmark's table.
