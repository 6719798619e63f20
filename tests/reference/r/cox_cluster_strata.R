# Topic: Cox regression with cluster-robust standard errors and stratified baseline hazards,
# Kaplan-Meier confidence intervals of every survfit conf.type, stratified log-rank tests.
# Data: data/lung.csv (survival::lung, exported by r/00_export_lung.R; clusters = inst,
# the institution that enrolled the patient) and data/rossi.csv.
source("r/common.R")
suppressPackageStartupMessages(library(survival))

ctl <- coxph.control(eps = 1e-11, iter.max = 100)

# ---- data -----------------------------------------------------------------------------
lung_all <- read.csv("data/lung.csv")
lung_vars <- c("time", "status", "inst", "age", "sex", "ph_ecog", "wt_loss")
lung <- lung_all[complete.cases(lung_all[, lung_vars]), ]
rossi <- read.csv("data/rossi.csv")
# three clusters by row position (1st, 4th, 7th, ... row; 2nd, 5th, ...): fewer clusters than
# coefficients, so the robust variance is singular and coxph.wtest's generalized inverse shows
rossi$third <- (seq_len(nrow(rossi)) - 1) %% 3

# ---- Cox ------------------------------------------------------------------------------
cox_block <- function(m, data, cluster = NULL, strata = NULL) {
  b <- coef(m)
  naive <- if (is.null(m$naive.var)) m$var else m$naive.var
  cc <- m$concordance
  list(
    formula = ftxt(m$formula),   # coxph moves cluster() out of the formula: see `cluster`
    cluster = cluster, strata = strata,
    ties = m$method,
    coefficients = nv(b),
    se = nv(setNames(sqrt(diag(m$var)), names(b))),
    naive_se = nv(setNames(sqrt(diag(naive)), names(b))),
    var = unname(m$var),
    logLik = as.numeric(logLik(m)),
    loglik_null_and_final = m$loglik,
    likelihood_ratio_test = 2 * (m$loglik[2] - m$loglik[1]),
    wald_test = unname(m$wald.test),
    score_test = unname(m$score),
    robust_score_test = if (is.null(m$rscore)) NULL else unname(m$rscore),
    concordance = unname(cc["concordance"]),
    concordance_se = unname(cc["std"]),
    concordance_counts = nv(cc[c("concordant", "discordant", "tied.x", "tied.y", "tied.xy")]),
    n = m$n, nevent = m$nevent, iter = m$iter,
    n_clusters = if (is.null(cluster)) NULL else length(unique(data[[cluster]])),
    n_strata = if (is.null(strata)) NULL else nrow(unique(data[, strata, drop = FALSE]))
  )
}

fits <- list()
for (ties in c("efron", "breslow")) {
  fits[[paste0("lung_cluster_", ties)]] <- cox_block(
    coxph(Surv(time, status) ~ age + sex + ph_ecog + wt_loss + cluster(inst),
          data = lung, ties = ties, control = ctl), lung, cluster = "inst")
  fits[[paste0("lung_strata_", ties)]] <- cox_block(
    coxph(Surv(time, status) ~ age + ph_ecog + wt_loss + strata(sex),
          data = lung, ties = ties, control = ctl), lung, strata = "sex")
  fits[[paste0("lung_strata_cluster_", ties)]] <- cox_block(
    coxph(Surv(time, status) ~ age + ph_ecog + wt_loss + strata(sex) + cluster(inst),
          data = lung, ties = ties, control = ctl), lung, cluster = "inst", strata = "sex")
  fits[[paste0("rossi_strata_", ties)]] <- cox_block(
    coxph(Surv(week, arrest) ~ fin + age + race + mar + paro + prio + strata(wexp),
          data = rossi, ties = ties, control = ctl), rossi, strata = "wexp")
}
fits[["rossi_strata_robust_efron"]] <- cox_block(
  coxph(Surv(week, arrest) ~ fin + age + race + mar + paro + prio + strata(wexp),
        data = rossi, ties = "efron", robust = TRUE, control = ctl), rossi, strata = "wexp")
fits[["rossi_two_strata_efron"]] <- cox_block(
  coxph(Surv(week, arrest) ~ fin + age + race + mar + prio + strata(wexp, paro),
        data = rossi, ties = "efron", control = ctl), rossi, strata = c("wexp", "paro"))
fits[["rossi_strata_cluster_age_efron"]] <- cox_block(
  coxph(Surv(week, arrest) ~ fin + race + mar + paro + prio + strata(wexp) + cluster(age),
        data = rossi, ties = "efron", control = ctl), rossi, cluster = "age", strata = "wexp")
fits[["rossi_few_clusters_efron"]] <- cox_block(
  coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio + cluster(third),
        data = rossi, ties = "efron", control = ctl), rossi, cluster = "third")

# ---- Kaplan-Meier: every conf.type ----------------------------------------------------
km_rows <- function(s, label) {
  idx <- if (is.null(s$strata)) rep(TRUE, length(s$time)) else s$strata == label
  list(time = s$time[idx], n_risk = s$n.risk[idx], n_event = s$n.event[idx],
       survival = s$surv[idx], std_err = s$std.err[idx],
       lower = s$lower[idx], upper = s$upper[idx])
}
km_block <- function(fit, times = NULL) {
  s <- if (is.null(times)) summary(fit) else summary(fit, times = times)
  labels <- if (is.null(fit$strata)) "all" else names(fit$strata)
  tab <- summary(fit)$table
  if (is.null(dim(tab))) tab <- t(as.matrix(tab))
  curves <- list()
  for (i in seq_along(labels)) {
    curves[[labels[i]]] <- km_rows(s, labels[i])
    curves[[labels[i]]]$median <- list(
      n = unname(tab[i, "n.max"]), events = unname(tab[i, "events"]),
      median = unname(tab[i, "median"]), lower = unname(tab[i, grep("LCL", colnames(tab))]),
      upper = unname(tab[i, grep("UCL", colnames(tab))]))
  }
  list(formula = ftxt(fit$call$formula),
       conf_type = fit$conf.type, conf_int = fit$conf.int,
       times = if (is.null(times)) "every event time" else times, curves = curves)
}
ten <- data.frame(t = 1:10, e = 1)
km <- list()
for (ct in c("log", "log-log", "plain")) {
  km[[paste0("rossi_fin_", ct)]] <- km_block(
    survfit(Surv(week, arrest) ~ fin, data = rossi, conf.type = ct), c(0, 10, 20, 30, 40, 52))
  km[[paste0("lung_sex_", ct)]] <- km_block(
    survfit(Surv(time, status) ~ sex, data = lung_all, conf.type = ct))
  km[[paste0("ten_events_", ct)]] <- km_block(
    survfit(Surv(t, e) ~ 1, data = ten, conf.type = ct), c(0, 5, 9, 10))
}
km[["lung_sex_log-log_90"]] <- km_block(
  survfit(Surv(time, status) ~ sex, data = lung_all, conf.type = "log-log", conf.int = 0.90))

# ---- stratified log-rank --------------------------------------------------------------
lr_block <- function(lr) {
  obs <- as.matrix(lr$obs); ex <- as.matrix(lr$exp)
  keep <- rowSums(ex) > 0
  df <- sum(keep) - 1
  list(formula = ftxt(lr$call$formula),
       chisq = lr$chisq, df = df, p_value = pchisq(lr$chisq, df, lower.tail = FALSE),
       n = nv(setNames(as.numeric(lr$n), names(lr$n))),
       observed = nv(setNames(rowSums(obs), names(lr$n))),
       expected = nv(setNames(rowSums(ex), names(lr$n))),
       variance = unname(lr$var),
       strata_n = nv(setNames(as.numeric(lr$strata), names(lr$strata))))
}
lung_ecog <- lung_all[!is.na(lung_all$ph_ecog), ]
logrank <- list(
  rossi_fin_strata_wexp = lr_block(survdiff(Surv(week, arrest) ~ fin + strata(wexp), data = rossi)),
  lung_sex_strata_ecog = lr_block(survdiff(Surv(time, status) ~ sex + strata(ph_ecog),
                                           data = lung_ecog)))

out <- list(
  topic = "cox_cluster_strata",
  description = paste(
    "survival::coxph with cluster(): robust variance t(D) %*% D where D sums the dfbeta",
    "residuals (score residuals times the inverse information) within each cluster, no",
    "small-sample factor; with strata(): one baseline hazard per stratum, partial likelihood",
    "summed over strata (Efron and Breslow ties); both together. survfit Kaplan-Meier",
    "intervals for conf.type log, log-log and plain (summary.survfit rows and the median",
    "table). survdiff log-rank tests with strata()."),
  data = list(lung = "data/lung.csv", rossi = "data/rossi.csv"),
  lung_rows = list(
    used_for_cox = nrow(lung), all = nrow(lung_all), used_for_logrank = nrow(lung_ecog),
    rule_cox = paste("complete cases of", paste(lung_vars, collapse = ", ")),
    rule_logrank = "rows with ph_ecog not missing", rule_km = "all rows"),
  formulas = list(
    lung_cluster = "Surv(time, status) ~ age + sex + ph_ecog + wt_loss + cluster(inst)",
    lung_strata = "Surv(time, status) ~ age + ph_ecog + wt_loss + strata(sex)",
    lung_strata_cluster = "Surv(time, status) ~ age + ph_ecog + wt_loss + strata(sex) + cluster(inst)",
    rossi_strata = "Surv(week, arrest) ~ fin + age + race + mar + paro + prio + strata(wexp)",
    rossi_strata_robust = "same as rossi_strata, robust = TRUE (each subject its own cluster)",
    rossi_two_strata = "Surv(week, arrest) ~ fin + age + race + mar + prio + strata(wexp, paro)",
    rossi_strata_cluster_age = "Surv(week, arrest) ~ fin + race + mar + paro + prio + strata(wexp) + cluster(age)",
    rossi_few_clusters = "Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio + cluster(third), third = (row number - 1) %% 3",
    km = "survfit(Surv(...) ~ group, conf.type = log | log-log | plain); summary(fit, times = ...)",
    logrank = "survdiff(Surv(...) ~ group + strata(s))"),
  versions = pkg_versions(c("survival", "jsonlite")),
  cox = fits,
  kaplan_meier = km,
  logrank = logrank,
  notes = paste(
    "Cox fits use coxph.control(eps = 1e-11, iter.max = 100). se = sqrt(diag(fit$var)): the",
    "robust variance when a cluster() term or robust = TRUE is present (coxph then keeps the",
    "model-based one as naive.var, reported as naive_se), else the model-based variance.",
    "var is fit$var (row-major = column-major, it is symmetric). wald_test is fit$wald.test",
    "(with the robust variance when robust), score_test fit$score (model-based, at beta = 0),",
    "robust_score_test fit$rscore (score residuals at beta = 0 summed within clusters).",
    "Concordance: fit$concordance; with strata only pairs within a stratum are compared,",
    "counts are summed over strata, and with cluster() its infinitesimal-jackknife variance",
    "sums the per-subject influence within clusters. lung clusters: inst (18 institutions in",
    "the rows used). rossi cluster(age): age at release in years, a deterministic grouping",
    "used only to exercise the clustered computation on data with many tied event times",
    "(weeks); it is not a substantive design. rossi cluster(third): 3 clusters by row position",
    "for 7 coefficients, so the robust variance is singular (rank 2): wald_test and",
    "robust_score_test then come from coxph.wtest's generalized Cholesky inverse (pivots below",
    "toler.chol = 2^-39 times the largest diagonal element are skipped). Multiple strata variables define one stratum",
    "per observed combination. KM: std_err is the standard error of S(t); lower/upper come",
    "from survfit's survfit_confint: log S*exp(-/+ z se), upper capped at 1; log-log",
    "exp(-exp(log(-log S) -/+ z se/log S)); plain S -/+ z se S clipped to [0, 1]; se is the",
    "Greenwood standard error of the cumulative hazard. Rows where S = 1 (before the first",
    "event) have lower = upper = 1; where S = 0 the limits are NA (null) and std_err NaN",
    "(null). median lower/upper are print.survfit's 0.95LCL/0.95UCL (0.90 for the",
    "conf.int = 0.90 block): the first time the lower (upper) band is <= 0.5.",
    "ten_events: times 1..10, all events, constructed in this script. Log-rank: observed",
    "and expected are summed over strata; chisq uses all groups with expected > 0 but one;",
    "variance is survdiff's var (summed over strata).")
)
write_expected(out, "cox_cluster_strata")
for (nm in names(fits)) cat(nm, ":", unlist(fits[[nm]]$coefficients), "|", unlist(fits[[nm]]$se), "\n")
