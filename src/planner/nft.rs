//! (placeholder until the renderer lands)
use crate::api::environment::FirewallPort;
pub fn table_name(environment_name: &str) -> String {
    format!("jpki_access_{}", environment_name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_"))
}
pub fn render_ruleset(environment_name: &str, _v4: &[ipnet::Ipv4Net], _v6: &[ipnet::Ipv6Net], _ports: &[FirewallPort]) -> String {
    table_name(environment_name)
}
