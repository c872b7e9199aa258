//! Patches: RFC 6902 JSON patch, RFC 7386 merge patch, strategic merge patch and server-side apply.
