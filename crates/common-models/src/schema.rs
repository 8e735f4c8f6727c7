//! The diesel schema of both databases (kept by hand beside the migrations;
//! `crates/common-models/tests` checks them against each other).

/// Main database: tenants, credentials, jobs and CVs.
pub mod main {
    diesel::table! {
        companies (id) {
            id -> Int8,
            name -> Varchar,
            created_at -> Timestamptz,
            plan -> Nullable<Varchar>,
            llm_budget_usd -> Nullable<Float8>,
            allowed_models -> Nullable<Array<Text>>,
            timezone -> Varchar,
            daily_spend_alert_usd -> Nullable<Float8>,
        }
    }

    diesel::table! {
        users (id) {
            id -> Int8,
            company_id -> Int8,
            email -> Varchar,
            full_name -> Nullable<Varchar>,
            role -> Varchar,
            is_active -> Bool,
            created_at -> Timestamptz,
            password_hash -> Nullable<Text>,
            password_changed_at -> Nullable<Timestamptz>,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        user_invitations (id) {
            id -> Int8,
            company_id -> Int8,
            email -> Varchar,
            role -> Varchar,
            token_hash -> Bytea,
            invited_by -> Nullable<Int8>,
            created_at -> Timestamptz,
            expires_at -> Timestamptz,
            accepted_at -> Nullable<Timestamptz>,
            accepted_user -> Nullable<Int8>,
            revoked_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        email_outbox (id) {
            id -> Int8,
            company_id -> Nullable<Int8>,
            recipient -> Varchar,
            subject -> Text,
            body -> Text,
            created_at -> Timestamptz,
            sent_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        audit_log (id) {
            id -> Int8,
            company_id -> Nullable<Int8>,
            actor_user_id -> Nullable<Int8>,
            actor_key_id -> Nullable<Int8>,
            actor_kind -> Varchar,
            action -> Varchar,
            object_type -> Varchar,
            object_id -> Nullable<Int8>,
            before -> Nullable<Jsonb>,
            after -> Nullable<Jsonb>,
            ip -> Nullable<Varchar>,
            user_agent -> Nullable<Varchar>,
            request_id -> Nullable<Varchar>,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        api_keys (id) {
            id -> Int8,
            company_id -> Int8,
            user_id -> Nullable<Int8>,
            name -> Varchar,
            key_prefix -> Varchar,
            key_hash -> Bytea,
            created_at -> Timestamptz,
            revoked_at -> Nullable<Timestamptz>,
            scopes -> Array<Text>,
        }
    }

    diesel::table! {
        jobs (id) {
            id -> Int8,
            company_id -> Int8,
            title -> Varchar,
            description -> Text,
            requirements -> Array<Text>,
            location -> Nullable<Varchar>,
            status -> Varchar,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        cvs (id) {
            id -> Int8,
            company_id -> Int8,
            file_name -> Varchar,
            content_type -> Varchar,
            size_bytes -> Int8,
            content_hash -> Bytea,
            storage_key -> Varchar,
            status -> Varchar,
            failure_reason -> Nullable<Text>,
            attempts -> Int4,
            page_count -> Nullable<Int4>,
            char_count -> Nullable<Int4>,
            section_count -> Nullable<Int4>,
            chunk_count -> Nullable<Int4>,
            facts -> Nullable<Jsonb>,
            summary -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            processed_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        applications (id) {
            id -> Int8,
            company_id -> Int8,
            job_id -> Int8,
            cv_id -> Int8,
            stage -> Varchar,
            notes -> Nullable<Text>,
            created_by -> Nullable<Int8>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        interviews (id) {
            id -> Int8,
            company_id -> Int8,
            application_id -> Int8,
            scheduled_at -> Timestamptz,
            duration_minutes -> Int4,
            kind -> Varchar,
            status -> Varchar,
            participants -> Array<Int8>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        interview_feedback (id) {
            id -> Int8,
            company_id -> Int8,
            interview_id -> Int8,
            author_id -> Int8,
            rating -> Int2,
            recommendation -> Varchar,
            comments -> Text,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        analysis_results (id) {
            id -> Int8,
            company_id -> Int8,
            application_id -> Int8,
            requested_by -> Nullable<Int8>,
            status -> Varchar,
            model -> Nullable<Varchar>,
            result -> Nullable<Jsonb>,
            failure_reason -> Nullable<Text>,
            attempts -> Int4,
            latency_ms -> Nullable<Int4>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            completed_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        spend_alerts (id) {
            id -> Int8,
            company_id -> Int8,
            kind -> Varchar,
            period_start -> Date,
            threshold_usd -> Float8,
            budget_share -> Nullable<Float8>,
            spent_usd -> Float8,
            created_at -> Timestamptz,
        }
    }

    diesel::joinable!(users -> companies (company_id));
    diesel::joinable!(api_keys -> companies (company_id));
    diesel::joinable!(jobs -> companies (company_id));
    diesel::joinable!(cvs -> companies (company_id));
    diesel::joinable!(user_invitations -> companies (company_id));
    diesel::joinable!(api_keys -> users (user_id));
    diesel::allow_tables_to_appear_in_same_query!(
        companies,
        users,
        api_keys,
        jobs,
        cvs,
        user_invitations,
        email_outbox,
        audit_log,
        applications,
        interviews,
        interview_feedback,
        analysis_results,
        spend_alerts
    );
}

/// Analytics database: the log tables (partitioned by month on `created_at`).
pub mod analytics {
    diesel::table! {
        llm_logs (event_id, created_at) {
            id -> Int8,
            event_id -> Uuid,
            created_at -> Timestamptz,
            action -> Varchar,
            message -> Nullable<Text>,
            user_id -> Nullable<Int8>,
            company_id -> Nullable<Int8>,
            interview_id -> Nullable<Int8>,
            request_id -> Nullable<Varchar>,
            model -> Nullable<Varchar>,
            tokens_used -> Nullable<Int4>,
            tokens_input -> Nullable<Int4>,
            tokens_output -> Nullable<Int4>,
            usage_reported -> Bool,
            cost_usd -> Nullable<Numeric>,
            price_table_version -> Nullable<Varchar>,
            latency_ms -> Nullable<Int4>,
            time_to_first_token_ms -> Nullable<Int4>,
            streaming -> Bool,
            http_status -> Nullable<Int2>,
            error_type -> Nullable<Varchar>,
            error_message -> Nullable<Text>,
            metadata -> Nullable<Jsonb>,
            deployment_version -> Nullable<Varchar>,
            deployment_environment -> Nullable<Varchar>,
            cache_hit -> Bool,
            cost_saved_usd -> Nullable<Numeric>,
            tokens_cached_input -> Nullable<Int4>,
            tokens_reasoning -> Nullable<Int4>,
        }
    }

    diesel::table! {
        system_logs (event_id, created_at) {
            id -> Int8,
            event_id -> Uuid,
            created_at -> Timestamptz,
            level -> Varchar,
            component -> Varchar,
            message -> Text,
            request_method -> Nullable<Varchar>,
            request_path -> Nullable<Varchar>,
            status_code -> Nullable<Int2>,
            latency_ms -> Nullable<Float8>,
            company_id -> Nullable<Int8>,
            user_id -> Nullable<Int8>,
            request_id -> Nullable<Varchar>,
            error_type -> Nullable<Varchar>,
            metadata -> Nullable<Jsonb>,
        }
    }
}
