//! Campaign records: the pure transitions the state machine allows.
//!
//! A campaign is created with every step pending; steps and tasks move forward only (a
//! terminal state is final, re-reporting the same terminal state is accepted so retries
//! are harmless); a finished campaign accepts no further change.

use chrono::{DateTime, Utc};

use crate::types::{
    CampaignRecord, CampaignState, NewCampaign, Rejection, StepRecord, StepState, TaskRecord,
    TaskUpdate,
};

fn check_id(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(field, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(Rejection::invalid(field, "must not contain NUL"));
    }
    Ok(())
}

/// Builds the stored record of a new campaign, validating it.
pub fn create(new: &NewCampaign, now: DateTime<Utc>) -> Result<CampaignRecord, Rejection> {
    check_id("campaign.id", &new.id)?;
    check_id("campaign.name", &new.name)?;
    check_id("campaign.submitted_by", &new.submitted_by)?;
    if new.spec.trim().is_empty() {
        return Err(Rejection::invalid("campaign.spec", "must not be empty"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in new.steps.iter().enumerate() {
        check_id(&format!("campaign.steps[{i}]"), s)?;
        if !seen.insert(s.as_str()) {
            return Err(Rejection::invalid(
                format!("campaign.steps[{i}]"),
                format!("step {s:?} appears twice"),
            ));
        }
    }
    Ok(CampaignRecord {
        id: new.id.clone(),
        name: new.name.clone(),
        spec: new.spec.clone(),
        submitted_by: new.submitted_by.clone(),
        submitted_at: now,
        updated_at: now,
        finished_at: None,
        state: CampaignState::Pending,
        message: String::new(),
        steps: new
            .steps
            .iter()
            .map(|name| StepRecord {
                name: name.clone(),
                state: StepState::Pending,
                started_at: None,
                ended_at: None,
                message: String::new(),
                tasks: Default::default(),
            })
            .collect(),
    })
}

/// True when an existing record is what `new` would have created (a retried put).
pub fn same_submission(existing: &CampaignRecord, new: &NewCampaign) -> bool {
    existing.name == new.name
        && existing.spec == new.spec
        && existing.submitted_by == new.submitted_by
        && existing.steps.iter().map(|s| &s.name).eq(new.steps.iter())
}

fn open_campaign(c: &CampaignRecord, to: &str) -> Result<(), Rejection> {
    if c.state.is_terminal() {
        return Err(Rejection::BadTransition {
            what: format!("campaign {}", c.id),
            from: format!("{:?}", c.state),
            to: to.to_owned(),
        });
    }
    Ok(())
}

fn step_mut<'a>(c: &'a mut CampaignRecord, step: &str) -> Result<&'a mut StepRecord, Rejection> {
    let id = format!("{}/{step}", c.id);
    c.steps
        .iter_mut()
        .find(|s| s.name == step)
        .ok_or(Rejection::NotFound {
            kind: "step".into(),
            id,
        })
}

/// Moves a step to `state`.
pub fn update_step(
    c: &mut CampaignRecord,
    step: &str,
    state: StepState,
    message: &str,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    open_campaign(c, &format!("step {step} {state:?}"))?;
    let id = c.id.clone();
    let s = step_mut(c, step)?;
    if s.state.is_terminal() && s.state != state {
        return Err(Rejection::BadTransition {
            what: format!("step {id}/{step}"),
            from: format!("{:?}", s.state),
            to: format!("{state:?}"),
        });
    }
    if s.state == state && state.is_terminal() {
        return Ok(());
    }
    if state == StepState::Running && s.started_at.is_none() {
        s.started_at = Some(now);
    }
    if state.is_terminal() {
        s.ended_at = Some(now);
    }
    s.state = state;
    if !message.is_empty() {
        s.message = message.to_owned();
    }
    c.state = CampaignState::Running;
    c.updated_at = now;
    Ok(())
}

/// Creates or moves a task of a step.
pub fn update_task(
    c: &mut CampaignRecord,
    step: &str,
    task: &TaskUpdate,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    check_id("task.id", &task.id)?;
    check_id("task.node", &task.node)?;
    open_campaign(c, &format!("task {} {:?}", task.id, task.state))?;
    let id = c.id.clone();
    let s = step_mut(c, step)?;
    if s.state.is_terminal() {
        return Err(Rejection::BadTransition {
            what: format!("step {id}/{step}"),
            from: format!("{:?}", s.state),
            to: format!("task {} {:?}", task.id, task.state),
        });
    }
    if let Some(existing) = s.tasks.get(&task.id) {
        if existing.state.is_terminal() && existing.state != task.state {
            return Err(Rejection::BadTransition {
                what: format!("task {id}/{step}/{}", task.id),
                from: format!("{:?}", existing.state),
                to: format!("{:?}", task.state),
            });
        }
        if existing.resource != task.resource {
            return Err(Rejection::invalid(
                "task.resource",
                format!(
                    "task {} acts on {}, not {}",
                    task.id, existing.resource, task.resource
                ),
            ));
        }
    }
    let previous = s.tasks.get(&task.id);
    let record = TaskRecord {
        id: task.id.clone(),
        resource: task.resource.clone(),
        node: task.node.clone(),
        state: task.state,
        execution_id: task
            .execution_id
            .clone()
            .or_else(|| previous.and_then(|p| p.execution_id.clone())),
        token: task.token.or_else(|| previous.and_then(|p| p.token)),
        message: task.message.clone(),
        updated_at: now,
    };
    s.tasks.insert(task.id.clone(), record);
    c.state = CampaignState::Running;
    c.updated_at = now;
    Ok(())
}

/// Ends a campaign in a terminal `state`.
pub fn finish(
    c: &mut CampaignRecord,
    state: CampaignState,
    message: &str,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    if !state.is_terminal() {
        return Err(Rejection::invalid(
            "finish.state",
            format!("{state:?} is not a terminal campaign state"),
        ));
    }
    if c.state == state {
        return Ok(());
    }
    open_campaign(c, &format!("{state:?}"))?;
    c.state = state;
    c.message = message.to_owned();
    c.finished_at = Some(now);
    c.updated_at = now;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TaskState;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000, 0).unwrap()
    }

    fn campaign() -> CampaignRecord {
        create(
            &NewCampaign {
                id: "c1".into(),
                name: "cache".into(),
                spec: "name: cache".into(),
                submitted_by: "alice".into(),
                steps: vec!["kill".into(), "wait".into()],
            },
            now(),
        )
        .unwrap()
    }

    fn task(state: TaskState) -> TaskUpdate {
        TaskUpdate {
            id: "t1".into(),
            resource: "docker/shop/redis/1".parse().unwrap(),
            node: "n1".into(),
            state,
            execution_id: None,
            token: None,
            message: String::new(),
        }
    }

    #[test]
    fn new_campaign_has_every_step_pending() {
        let c = campaign();
        assert_eq!(c.state, CampaignState::Pending);
        assert!(c.steps.iter().all(|s| s.state == StepState::Pending));
    }

    #[test]
    fn duplicate_step_names_are_refused_with_the_index() {
        let e = create(
            &NewCampaign {
                id: "c1".into(),
                name: "n".into(),
                spec: "x".into(),
                submitted_by: "a".into(),
                steps: vec!["a".into(), "a".into()],
            },
            now(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("campaign.steps[1]"), "{e}");
    }

    #[test]
    fn steps_move_forward_only_and_unknown_steps_are_named() {
        let mut c = campaign();
        update_step(&mut c, "kill", StepState::Running, "", now()).unwrap();
        assert_eq!(c.state, CampaignState::Running);
        update_step(&mut c, "kill", StepState::Succeeded, "ok", now()).unwrap();
        // Re-reporting is fine, going back is not.
        update_step(&mut c, "kill", StepState::Succeeded, "", now()).unwrap();
        let before = c.clone();
        assert!(matches!(
            update_step(&mut c, "kill", StepState::Running, "", now()),
            Err(Rejection::BadTransition { .. })
        ));
        let e = update_step(&mut c, "nope", StepState::Running, "", now()).unwrap_err();
        assert!(e.to_string().contains("c1/nope"), "{e}");
        assert_eq!(c, before);
    }

    #[test]
    fn tasks_keep_their_token_and_refuse_leaving_a_terminal_state() {
        let mut c = campaign();
        let mut t = task(TaskState::Running);
        t.token = Some(ire_core::FencingToken(9));
        update_task(&mut c, "kill", &t, now()).unwrap();
        update_task(&mut c, "kill", &task(TaskState::Succeeded), now()).unwrap();
        let rec = &c.step("kill").unwrap().tasks["t1"];
        assert_eq!(rec.token, Some(ire_core::FencingToken(9)));
        assert!(update_task(&mut c, "kill", &task(TaskState::Running), now()).is_err());
    }

    #[test]
    fn finished_campaign_accepts_no_change() {
        let mut c = campaign();
        assert!(finish(&mut c, CampaignState::Running, "", now()).is_err());
        finish(&mut c, CampaignState::Aborted, "probe failed", now()).unwrap();
        finish(&mut c, CampaignState::Aborted, "again", now()).unwrap();
        let before = c.clone();
        assert!(update_step(&mut c, "kill", StepState::Running, "", now()).is_err());
        assert!(update_task(&mut c, "kill", &task(TaskState::Running), now()).is_err());
        assert!(finish(&mut c, CampaignState::Succeeded, "", now()).is_err());
        assert_eq!(c, before);
    }
}
