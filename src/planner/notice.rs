//! URL通知書 (URL notice): the endpoints a verifier uses for the provision methods it chose (A-11-1), for a
//! person (Japanese and English) and for a program (JSON), in a ConfigMap in the registration's namespace.

use super::children::{Child, labels, owner};
use super::resolve::Resolved;
use crate::api::environment::AccessEnvironment;
use crate::api::{AccessRegistration, Environment, ProvisionMethod};
use crate::domain::date::JST;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NoticeEndpoint {
    /// `signing` (署名用電子証明書) or `userAuthentication` (利用者証明用電子証明書).
    pub certificate_type: &'static str,
    pub provision_method: ProvisionMethod,
    pub url: String,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub registration: String,
    pub namespace: String,
    pub verifier: String,
    pub environment: Environment,
    pub access_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_end: Option<String>,
    pub endpoints: Vec<NoticeEndpoint>,
}

pub fn notice_name(registration: &str) -> String {
    format!("{registration}-url-notice")
}

/// The notice of a registration that is Active or Scheduled; `None` for the others.
pub fn notice(r: &Resolved, env: &AccessEnvironment) -> Option<Notice> {
    use crate::api::registration::RegistrationPhase::{Active, Scheduled};
    if !matches!(r.phase, Active | Scheduled) {
        return None;
    }
    let window = r.window.as_ref()?;
    let methods = &window.provision_methods;
    let mut endpoints = Vec::new();
    for (certificate_type, method) in [("signing", methods.signing), ("userAuthentication", methods.user_authentication)] {
        // A test registration may leave the methods open: it then gets every endpoint of the environment.
        let wanted: Vec<ProvisionMethod> = match method {
            Some(ProvisionMethod::None) => continue,
            Some(m) => vec![m],
            None => vec![ProvisionMethod::Ocsp, ProvisionMethod::Crl],
        };
        for m in wanted {
            for e in env.spec.endpoints.iter().filter(|e| e.provision_method == m) {
                endpoints.push(NoticeEndpoint { certificate_type, provision_method: m, url: format!("https://{}{}", e.host, e.path) });
            }
        }
    }
    let date = |t: jiff::Timestamp| t.to_zoned(jiff::tz::TimeZone::fixed(JST)).date();
    Some(Notice {
        registration: r.evaluation.key.name.clone(),
        namespace: r.evaluation.key.namespace.clone(),
        verifier: r.evaluation.verifier.clone(),
        environment: r.evaluation.environment,
        access_start: date(window.start).to_string(),
        // The window's end is exclusive (00:00 JST the next day); the notice gives the last day.
        access_end: window.end.map(|t| date(t).yesterday().map(|d| d.to_string()).unwrap_or_default()),
        endpoints,
    })
}

fn method_ja(m: ProvisionMethod) -> &'static str {
    match m {
        ProvisionMethod::Crl => "CRL提供方式",
        ProvisionMethod::Ocsp => "OCSPレスポンダ方式",
        ProvisionMethod::None => "なし",
    }
}

fn type_ja(t: &str) -> &'static str {
    if t == "signing" { "署名用電子証明書" } else { "利用者証明用電子証明書" }
}

pub fn text_ja(n: &Notice) -> String {
    let env = match n.environment {
        Environment::Test => "テスト環境",
        Environment::Production => "本番環境",
    };
    let mut s = format!("URL通知書\n\n署名検証者: {}\n登録: {}/{}\n環境: {env}\nアクセス開始日: {}\n", n.verifier, n.namespace, n.registration, n.access_start);
    if let Some(end) = &n.access_end {
        s.push_str(&format!("アクセス終了日: {end}\n"));
    }
    s.push_str("\n接続先:\n");
    for e in &n.endpoints {
        s.push_str(&format!("- {} ({}): {}\n", type_ja(e.certificate_type), method_ja(e.provision_method), e.url));
    }
    s
}

pub fn text_en(n: &Notice) -> String {
    let mut s = format!(
        "URL notice\n\nVerifier: {}\nRegistration: {}/{}\nEnvironment: {}\nAccess starts: {} (00:00 JST)\n",
        n.verifier, n.namespace, n.registration, n.environment, n.access_start
    );
    if let Some(end) = &n.access_end {
        s.push_str(&format!("Access ends after: {end}\n"));
    }
    s.push_str("\nEndpoints:\n");
    for e in &n.endpoints {
        let t = if e.certificate_type == "signing" { "signing certificates" } else { "user-authentication certificates" };
        s.push_str(&format!("- {t} ({:?}): {}\n", e.provision_method, e.url));
    }
    s
}

/// The notice as a ConfigMap owned by its registration.
pub fn notice_config_map(n: &Notice, reg: &AccessRegistration, env_name: &str) -> Child {
    let json = serde_json::to_string_pretty(n).unwrap_or_default();
    Child::ConfigMap(ConfigMap {
        metadata: ObjectMeta {
            name: Some(notice_name(&n.registration)),
            namespace: Some(n.namespace.clone()),
            labels: Some(labels(env_name)),
            owner_references: owner(reg),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("notice.ja.txt".to_string(), text_ja(n)),
            ("notice.en.txt".to_string(), text_en(n)),
            ("notice.json".to_string(), json + "\n"),
        ])),
        ..Default::default()
    })
}
