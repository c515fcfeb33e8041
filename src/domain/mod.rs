//! Pure domain rules: identifiers, networks, dates, and the validation of forms. No I/O and no Kubernetes client;
//! shared by the controller, the offline CLI (`validate`, `render`) and the tests.

pub mod approve;
pub mod cidr;
pub mod corporate_number;
pub mod cross;
pub mod date;
pub mod digest;
pub mod forms;
pub mod lg_code;
pub mod problem;
pub mod rules;
