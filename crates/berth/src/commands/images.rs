//! `berth images`: repositories and their images, from the ECR API.

use anyhow::Context as _;
use serde_json::{json, Value};

use super::client::{short, ClientArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Only this repository.
    repository: Option<String>,
}

/// Every page of a paginated ECR call, concatenated under `key`.
fn all_pages(
    api: &berth_client::ApiClient,
    op: &str,
    mut input: Value,
    key: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    loop {
        let page = api
            .ecr(op, &input)
            .with_context(|| format!("{op} failed"))?;
        out.extend(page[key].as_array().cloned().unwrap_or_default());
        match page.get("nextToken").and_then(Value::as_str) {
            Some(t) => input["nextToken"] = json!(t),
            None => return Ok(out),
        }
    }
}

fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

fn when(epoch: f64) -> String {
    let d = berth_sigv4::format_amz_date(epoch as u64);
    format!(
        "{}-{}-{} {}:{}",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13]
    )
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let api = a.client.api()?;
    let repos: Vec<String> = match &a.repository {
        Some(r) => vec![r.clone()],
        None => all_pages(&api, "DescribeRepositories", json!({}), "repositories")?
            .iter()
            .filter_map(|r| r["repositoryName"].as_str().map(str::to_string))
            .collect(),
    };
    let mut rows = vec![[
        "REPOSITORY".to_string(),
        "TAG".into(),
        "DIGEST".into(),
        "SIZE".into(),
        "PUSHED".into(),
    ]];
    for repo in repos {
        let mut images = all_pages(
            &api,
            "DescribeImages",
            json!({"repositoryName": repo}),
            "imageDetails",
        )?;
        images.sort_by(|x, y| {
            y["imagePushedAt"]
                .as_f64()
                .partial_cmp(&x["imagePushedAt"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for img in images {
            let digest = short(img["imageDigest"].as_str().unwrap_or(""));
            let size = human(img["imageSizeInBytes"].as_u64().unwrap_or(0));
            let pushed = when(img["imagePushedAt"].as_f64().unwrap_or(0.0));
            let tags: Vec<String> = img["imageTags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if tags.is_empty() {
                rows.push([
                    repo.clone(),
                    "<none>".into(),
                    digest.clone(),
                    size.clone(),
                    pushed.clone(),
                ]);
            }
            for t in tags {
                rows.push([
                    repo.clone(),
                    t,
                    digest.clone(),
                    size.clone(),
                    pushed.clone(),
                ]);
            }
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes and dates render the way `docker images` shows them.
    #[test]
    fn formatting() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(1_066_415), "1.1MB");
        assert_eq!(when(1_440_938_160.0), "2015-08-30 12:36");
    }
}
