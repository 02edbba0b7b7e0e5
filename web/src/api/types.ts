// The API's types, generated from kiln's OpenAPI document (web/openapi.json, itself checked
// against the server by kiln-server's tests). A server change that breaks the UI fails `tsc`.
import type { components } from "./schema";

type S = components["schemas"];
export type Me = S["Me"];
export type SignInMethods = S["SignInMethods"];
export type User = S["User"];
export type UserRef = S["UserRef"];
export type Repo = S["Repo"];
export type CreateRepo = S["CreateRepo"];
export type UpdateRepo = S["UpdateRepo"];
export type SessionSummary = S["SessionSummary"];
export type SessionDetail = S["SessionDetail"];
export type SessionTree = S["SessionTree"];
export type SessionTreeNode = S["SessionTreeNode"];
export type SessionCreated = S["SessionCreated"];
export type CreateSession = S["CreateSession"];
export type SendPrompt = S["SendPrompt"];
export type PromptAccepted = S["PromptAccepted"];
export type StopReport = S["StopReport"];
export type UpdateSession = S["UpdateSession"];
export type CreateShare = S["CreateShare"];
export type ShareCreated = S["ShareCreated"];
export type Role = S["Role"];
export type DeliveryMode = S["DeliveryMode"];
export type EventEnvelope = S["EventEnvelope"];
export type EventsPage = S["EventsPage"];
export type Event = S["Event"];
export type ServerFrame = S["ServerFrame"];
export type ClientFrame = S["ClientFrame"];
export type UserClientFrame = S["UserClientFrame"];
export type UserServerFrame = S["UserServerFrame"];
export type Ephemeral = S["Ephemeral"];
export type Image = S["Image"];
export type ImageBuildStarted = S["ImageBuildStarted"];
export type PoolStatus = S["PoolStatus"];
export type RepoSecret = S["RepoSecret"];
export type SetSecret = S["SetSecret"];
export type ApiError = S["ApiError"];
export type RepoAccess = S["RepoAccess"];
export type SetRepoAccess = S["SetRepoAccess"];
export type SessionPushed = S["SessionPushed"];
export type OpenPullRequest = S["OpenPullRequest"];
export type PullRequest = S["PullRequest"];
export type PlanDecision = S["PlanDecision"];
export type PlanDecided = S["PlanDecided"];

/** One event of the log, by its `type`. */
export type EventOf<T extends Event["type"]> = Extract<Event, { type: T }>;
export type StatsReport = S["StatsReport"];
export type StatsRow = S["StatsRow"];
export type Percentiles = S["Percentiles"];
