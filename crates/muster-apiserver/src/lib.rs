//! muster-apiserver
