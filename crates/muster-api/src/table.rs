//! Server-side printing: `Table` column definitions and rows for `kubectl get`.
