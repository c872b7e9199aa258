//! muster-controllers
