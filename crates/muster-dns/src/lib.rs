//! muster-dns
