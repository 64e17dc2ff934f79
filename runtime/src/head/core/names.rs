//! Request names, for errors, logs and the audit trail.

use crate::proto::head::HeadRequest;

/// The request's variant name, for errors and logs.
pub fn request_name(req: &HeadRequest) -> &'static str {
    use HeadRequest as R;
    match req {
        R::Hello { .. } => "Hello",
        R::Join { .. } => "Join",
        R::Register(_) => "Register",
        R::Heartbeat { .. } => "Heartbeat",
        R::Unregister { .. } => "Unregister",
        R::GetStatus => "GetStatus",
        R::GetStatusSince { .. } => "GetStatusSince",
        R::AddObjectLocation { .. } => "AddObjectLocation",
        R::UpdateObjectLocations { .. } => "UpdateObjectLocations",
        R::FreeObjects { .. } => "FreeObjects",
        R::GetObjectLocations { .. } => "GetObjectLocations",
        R::UploadBinary { .. } => "UploadBinary",
        R::SubmitJob(_) => "SubmitJob",
        R::RegisterDriver { .. } => "RegisterDriver",
        R::ListJobs => "ListJobs",
        R::JobLogs { .. } => "JobLogs",
        R::StopJob { .. } => "StopJob",
        R::RegisterActor(..) => "RegisterActor",
        R::UpdateActor { .. } => "UpdateActor",
        R::GetActor { .. } => "GetActor",
        R::GetNamedActor { .. } => "GetNamedActor",
        R::KillActor { .. } => "KillActor",
        R::ListActors => "ListActors",
        R::ListTasks => "ListTasks",
        R::ListObjects => "ListObjects",
        R::ListWorkers => "ListWorkers",
        R::QueryTasks(_) => "QueryTasks",
        R::WorkerLog { .. } => "WorkerLog",
        R::Metrics => "Metrics",
        R::ReportRun(_) => "ReportRun",
        R::ListRuns => "ListRuns",
        R::ReportServe(_) => "ReportServe",
        R::ListServe => "ListServe",
        R::GetRun { .. } => "GetRun",
        R::Models(_) => "Models",
        R::PlacementGroup(_) => "PlacementGroup",
        R::DrainNode { .. } => "DrainNode",
        R::DrainStarted { .. } => "DrainStarted",
        R::Access(_) => "Access",
        R::Queue(_) => "Queue",
        R::SetResidency { .. } => "SetResidency",
        R::NamespaceKey { .. } => "NamespaceKey",
        R::Relayed { .. } => "Relayed",
    }
}
