//! What a program writes: the [`ProxyHttp`](proxy_trait::ProxyHttp) trait
//! and the [`Session`](session::Session) each hook is handed.

pub(crate) mod peer_choice;
pub(crate) mod proxy_trait;
pub(crate) mod session;
