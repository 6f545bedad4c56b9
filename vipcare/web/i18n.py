"""Every word the workspace shows, in zh-CN and en, and how a language is chosen.

One catalogue: ``MESSAGES[key] = (zh-CN, en)``. The language is the user's
saved setting, else the browser's ``Accept-Language``, else zh-CN. A missing
key is a bug, so :func:`translate` raises instead of showing the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"

MESSAGES: dict[str, tuple[str, str]] = {
    # --- frame -------------------------------------------------------------------------
    "app_name": ("VIP 客户关怀工作台", "VIP care workspace"),
    "skip_to_content": ("跳到主要内容", "Skip to main content"),
    "nav_label": ("主导航", "Main navigation"),
    "nav_day": ("我的今天", "My day"),
    "nav_tasks": ("任务", "Tasks"),
    "nav_team": ("团队", "Team"),
    "nav_qa": ("通话质检", "Call QA"),
    "nav_settings": ("设置", "Settings"),
    "sign_out": ("退出", "Sign out"),
    "signed_in_as": ("已登录：{name}（{role}）", "Signed in as {name} ({role})"),
    "role_manager": ("客户经理", "account manager"),
    "role_supervisor": ("主管", "supervisor"),
    "times_in": ("时间按 {tz} 显示", "Times shown in {tz}"),
    "language": ("语言", "Language"),
    # --- sign-in -----------------------------------------------------------------------
    "sign_in": ("登录", "Sign in"),
    "sign_in_title": ("登录工作台", "Sign in to the workspace"),
    "login_id": ("客户经理编号", "Manager ID"),
    "login_id_hint": ("例如 M00001", "for example M00001"),
    "password": ("密码", "Password"),
    "login_failed": ("编号或密码不正确。", "Wrong manager ID or password."),
    "login_throttled": (
        "登录失败次数过多，请 {minutes} 分钟后再试。",
        "Too many failed sign-ins. Try again in {minutes} minutes.",
    ),
    "session_expired": ("登录已过期，请重新登录。", "Your session expired. Please sign in again."),
    "signed_out": ("您已退出。", "You have signed out."),
    "session_ended_password": (
        "密码已更改，此前的登录均已失效，请用新密码登录。",
        "The password was changed, which ended every earlier sign-in. "
        "Please sign in with the new password.",
    ),
    "session_ended_role": (
        "您的角色已更改，请重新登录。",
        "Your role was changed. Please sign in again.",
    ),
    "form_expired": (
        "表单已过期或来源不明，请刷新页面后重试。",
        "This form expired or did not come from this site. Reload the page and try again.",
    ),
    "login_help": ("还没有密码？请管理员运行：", "No password yet? Ask an administrator to run:"),
    "login_help_id": ("您的编号", "YOUR-ID"),
    # --- my day ------------------------------------------------------------------------
    "my_day_title": ("我的今天", "My day"),
    "day_of": ("{name} 的今天", "{name}'s day"),
    "today_is": ("{date}，{weekday}", "{weekday}, {date}"),
    "capacity": ("每日可拨打 {n} 通", "Capacity {n} calls a day"),
    "section_ready": ("可以拨打", "Ready to call"),
    "section_waiting": ("等待通话前短信", "Waiting for the pre-call SMS"),
    "section_overdue": ("已逾期", "Overdue"),
    "section_empty_ready": ("今天没有可以拨打的任务。", "Nothing ready to call today."),
    "section_empty_waiting": ("没有等待短信的任务。", "No task is waiting for its SMS."),
    "section_empty_overdue": ("没有逾期任务。", "Nothing overdue."),
    "showing_n_of_m": ("显示 {n} / 共 {m} 条", "Showing {n} of {m}"),
    "calls_and_tasks": (
        "{calls} 通电话，共 {tasks} 项任务：同一位客户的事项在一通电话里谈完。",
        "{calls} calls, {tasks} tasks: one call covers everything for a customer.",
    ),
    "one_call_topics": ("这通电话要谈 {n} 件事：", "{n} things to raise on this call:"),
    "same_call_title": ("这通电话还要谈", "Also on this call"),
    "same_call_hint": (
        "同一位客户还有这些待办，请在这通电话里一并处理，并分别记录结果。",
        "This customer has these open tasks too: raise them on the same call and record each outcome.",
    ),
    "see_all": ("查看全部", "See all"),
    "summary_label": ("今日概览", "Today at a glance"),
    "read_only_view": (
        "您正在查看 {name} 的任务（只读）。",
        "You are looking at {name}'s tasks (read only).",
    ),
    # --- customer card -----------------------------------------------------------------
    "open_task": ("处理任务", "Work this call"),
    "call": ("拨打 {phone}", "Call {phone}"),
    "phone": ("电话", "Phone"),
    "tier": ("等级", "Tier"),
    "clubs": ("俱乐部", "Clubs"),
    "no_clubs": ("无", "none"),
    "plan": ("套餐", "Plan"),
    "no_plan": ("无套餐", "no plan"),
    "balance": ("余额", "Balance"),
    "balance_as_of": ("截至 {at}", "as of {at}"),
    "last_contact": ("上次联系", "Last contact"),
    "never": ("从未", "never"),
    "priority": ("优先级", "Priority"),
    "due_on": ("应联系日", "Due"),
    "scheduled_on": ("安排日", "Planned for"),
    "attempt_n": ("第 {n} 次尝试", "attempt {n}"),
    "why": ("原因", "Why"),
    "precall_sms": ("通话前短信", "Pre-call SMS"),
    "notice_no_notice": ("不发短信（{reason}）", "no notice ({reason})"),
    "notice_no_notice_plain": ("不发短信", "no notice"),
    "notice_waiting": ("待发送（{at}）", "waiting (due {at})"),
    "notice_sent": ("已发送 {at}", "sent {at}"),
    "notice_delivered": ("已送达（发送于 {at}）", "delivered (sent {at})"),
    "notice_failed": ("发送失败", "failed"),
    "notice_undelivered": ("未送达", "undelivered"),
    "notice_suppressed": ("未发送", "not sent"),
    "usage_chart": ("近几个月用量占套餐额度", "Recent months' usage against the plan"),
    "usage_none": ("暂无用量数据", "No usage data yet"),
    "usage_voice": ("通话", "Voice"),
    "usage_data": ("流量", "Data"),
    "usage_sms": ("短信", "SMS"),
    "usage_desc": (
        "{month}：通话 {voice}%，流量 {data}%，短信 {sms}%",
        "{month}: voice {voice}%, data {data}%, SMS {sms}%",
    ),
    "allowance_line": ("100% = 套餐额度", "100% = plan allowance"),
    # --- why a call --------------------------------------------------------------------
    "why_plan_fit": (
        "{current}（月均 ¥{current_cost}）→ {suggested}（月均 ¥{suggested_cost}），每月节省 ¥{saving}",
        "{current} (¥{current_cost}/month) → {suggested} (¥{suggested_cost}/month), "
        "saves ¥{saving} a month",
    ),
    "why_callback": ("定期回访，应于 {due} 联系", "Periodic callback, due {due}"),
    "why_callback_retry": ("未接通后的重拨（第 {n} 次）", "Retry after no answer (try {n})"),
    "why_birthday": ("生日 {day}", "Birthday on {day}"),
    "why_grace": ("宽限期后余额仍为 ¥{balance}", "Balance still ¥{balance} after the grace period"),
    "grace_credit": ("宽限额度", "Grace credit"),
    "grace_line": (
        "¥{amount}，{granted} 发放，截止 {deadline}（{status}）",
        "¥{amount}, granted {granted}, deadline {deadline} ({status})",
    ),
    "grace_open": ("进行中", "open"),
    "grace_repaid": ("已还款", "repaid"),
    "grace_suspended": ("已停机", "suspended"),
    # --- working a task ----------------------------------------------------------------
    "task_title": ("任务 #{id}：{name}", "Task #{id}: {name}"),
    "record_outcome": ("记录通话结果", "Record the outcome"),
    "outcome": ("结果", "Outcome"),
    "satisfaction": ("满意度（1–5）", "Satisfaction (1–5)"),
    "satisfaction_none": ("未评分", "not rated"),
    "satisfaction_hint": ("仅在与客户通话时填写", "Only when you spoke to the customer"),
    "note": ("备注", "Note"),
    "save_outcome": ("保存结果", "Save outcome"),
    "reschedule": ("改期", "Reschedule"),
    "reschedule_to": ("新日期", "New date"),
    "reschedule_reason": ("改期原因", "Reason"),
    "reschedule_hint": (
        "仅限工作日，且当天未超过您的每日容量。最近有空位的日期：{day}",
        "Working days only, within your daily capacity. Next day with room: {day}",
    ),
    "reschedule_hint_none": (
        "未来 90 天内没有空位。",
        "No day with room in the next 90 days.",
    ),
    "reschedule_submit": ("改期", "Reschedule"),
    "task_closed": ("此任务已结束：{outcome}。", "This task is closed: {outcome}."),
    "task_cancelled": ("此任务已取消。", "This task was cancelled."),
    "not_ready_yet": (
        "通话前短信尚未发出（或提前时间未到），任务就绪后才能记录结果。",
        "The pre-call SMS has not gone out yet (or its lead time has not passed); "
        "you can record the outcome once the task is ready.",
    ),
    "supervisor_read_only": (
        "只有负责的客户经理可以处理此任务。",
        "Only the customer's account manager can work this task.",
    ),
    "err_outcome": ("请选择结果。", "Choose an outcome."),
    "err_satisfaction": ("满意度须为 1 到 5。", "Satisfaction must be 1 to 5."),
    "err_satisfaction_reached": (
        "只有与客户通话时才能填写满意度。",
        "A satisfaction score needs a customer you spoke to.",
    ),
    "err_note_long": ("备注最多 2000 字。", "The note is limited to 2000 characters."),
    "err_date": ("请输入有效日期。", "Enter a valid date."),
    "err_reschedule_reason": (
        "请填写改期原因（最多 500 字）。",
        "Give a reason (up to 500 characters).",
    ),
    "err_reschedule_past": ("不能改到过去的日期。", "That date is in the past."),
    "err_reschedule_too_far": ("最多只能改到 90 天之后。", "At most 90 days ahead."),
    "err_reschedule_same_day": ("任务已安排在这一天。", "The task is already on that day."),
    "err_reschedule_weekend": (
        "请选择工作日（周一至周五）。",
        "Choose a working day (Monday to Friday).",
    ),
    "err_reschedule_full": ("这一天已排满。", "That day is full."),
    "err_reschedule_no_capacity": ("您的每日容量为 0。", "Your daily capacity is 0."),
    "err_next_free": ("最近有空位的日期：{day}。", "The next day with room is {day}."),
    "err_task_changed": (
        "任务状态已变化，请刷新后重试。",
        "The task changed meanwhile; reload and try again.",
    ),
    "msg_task_done": ("任务 #{id} 已完成。", "Task #{id} is done."),
    "msg_task_retry": (
        "任务 #{id} 已完成；已安排 {day} 重拨。",
        "Task #{id} is done; a retry is planned for {day}.",
    ),
    "msg_task_rescheduled": ("任务 #{id} 已改到 {day}。", "Task #{id} moved to {day}."),
    "msg_qa_reviewed": ("质检样本 #{id} 已评分。", "QA sample #{id} reviewed."),
    "msg_qa_drawn": (
        "{day}：{calls} 通电话，抽取 {drawn} 个新样本（共 {sampled} 个）。",
        "{day}: {calls} calls, {drawn} new samples drawn ({sampled} in all).",
    ),
    "msg_settings_saved": ("设置已保存。", "Settings saved."),
    # --- outcomes, kinds, statuses, tiers ------------------------------------------------
    "outcome_reached": ("已接通", "reached"),
    "outcome_no_answer": ("未接听", "no answer"),
    "outcome_declined": ("客户拒绝", "declined"),
    "outcome_plan_changed": ("已改套餐", "plan changed"),
    "outcome_wrong_number": ("号码错误", "wrong number"),
    "kind_callback": ("定期回访", "callback"),
    "kind_plan_fit": ("套餐建议", "plan fit"),
    "kind_grace_followup": ("宽限期跟进", "grace follow-up"),
    "kind_birthday": ("生日关怀", "birthday"),
    "status_awaiting_notice": ("等待短信", "awaiting SMS"),
    "status_ready": ("可拨打", "ready"),
    "status_done": ("已完成", "done"),
    "status_cancelled": ("已取消", "cancelled"),
    "tier_silver": ("银卡", "silver"),
    "tier_gold": ("金卡", "gold"),
    "tier_platinum": ("白金卡", "platinum"),
    "tier_diamond": ("钻石卡", "diamond"),
    "club_music": ("音乐", "music"),
    "club_games": ("游戏", "games"),
    "club_film": ("影视", "film"),
    "club_health": ("健康", "health"),
    "club_travel": ("旅行", "travel"),
    "club_reading": ("阅读", "reading"),
    "club_sports": ("运动", "sports"),
    "msg_status_queued": ("排队中", "queued"),
    "msg_status_sending": ("发送中", "sending"),
    "msg_status_sent": ("已发送", "sent"),
    "msg_status_delivered": ("已送达", "delivered"),
    "msg_status_undelivered": ("未送达", "undelivered"),
    "msg_status_failed": ("失败", "failed"),
    "msg_status_suppressed": ("未发送", "suppressed"),
    "customer_status_active": ("正常", "active"),
    "customer_status_suspended": ("已停机", "suspended"),
    "customer_status_closed": ("已销户", "closed"),
    # --- task list ---------------------------------------------------------------------
    "tasks_title": ("任务列表", "Tasks"),
    "filters": ("筛选", "Filters"),
    "filter_status": ("状态", "Status"),
    "filter_kind": ("类型", "Kind"),
    "filter_since": ("从", "From"),
    "filter_until": ("到", "Until"),
    "filter_manager": ("客户经理", "Manager"),
    "filter_open": ("未结束", "open"),
    "any": ("全部", "any"),
    "apply": ("应用", "Apply"),
    "download_csv": ("下载 CSV", "Download CSV"),
    "col_task": ("任务", "Task"),
    "col_customer": ("客户", "Customer"),
    "col_status": ("状态", "Status"),
    "col_kind": ("类型", "Kind"),
    "col_day": ("日期", "Day"),
    "col_manager": ("客户经理", "Manager"),
    "col_outcome": ("结果", "Outcome"),
    "no_tasks": ("没有符合条件的任务。", "No task matches these filters."),
    "page_prev": ("上一页", "Previous page"),
    "page_next": ("下一页", "Next page"),
    "pagination": ("分页", "Pagination"),
    "showing_range": ("第 {first}–{last} 条，共 {total} 条", "{first}–{last} of {total}"),
    # --- customer and timeline ---------------------------------------------------------
    "customer_title": ("客户 {name}", "Customer {name}"),
    "timeline": ("客户时间线", "Timeline"),
    "timeline_empty": ("暂无记录。", "Nothing recorded yet."),
    "timeline_recent": ("最近动态", "Recent activity"),
    "see_timeline": ("查看完整时间线", "See the whole timeline"),
    "manager": ("客户经理", "Account manager"),
    "sms_opt_out": ("已退订短信", "opted out of SMS"),
    "do_not_call": ("勿扰（不拨打）", "do not call"),
    "customer_tasks": ("任务", "Tasks"),
    "message_entry": ("{channel}（{template}）：{status}", "{channel} ({template}): {status}"),
    "template_precall": ("通话前短信", "pre-call notice"),
    "template_greeting": ("生日祝福", "birthday greeting"),
    "template_grace_notice": ("宽限额度通知", "grace credit notice"),
    "template_plan_fit_notice": ("套餐建议通知", "plan suggestion"),
    "channel_sms": ("短信", "SMS"),
    "channel_voice": ("语音", "Voice"),
    "by_actor": ("操作者：{actor}", "by {actor}"),
    "actor_flow": ("每日关怀流程", "the daily care run"),
    "actor_system": ("系统", "the system"),
    "actor_webhook": ("短信服务商回执", "the SMS provider"),
    "actor_import": ("数据导入", "a data import"),
    "actor_cli": ("命令行操作员", "an operator (command line)"),
    "ev_task.done": ("通话结果：{outcome}", "Call outcome: {outcome}"),
    "ev_task.rescheduled": (
        "任务改期：{from} → {to}（{reason}）",
        "Task moved {from} → {to} ({reason})",
    ),
    "ev_task.retry_scheduled": ("已安排重拨：{due_on}", "Retry planned for {due_on}"),
    "ev_task.ready": ("任务可拨打", "Task ready to call"),
    "ev_task.cancelled": ("任务已取消", "Task cancelled"),
    "ev_task.escalated": ("任务已升级", "Task escalated"),
    "ev_ledger.credit": (
        "入账 ¥{amount}（余额 ¥{balance_after}）",
        "Credit ¥{amount} (balance ¥{balance_after})",
    ),
    "ev_customer.suspended": ("已停机", "Line suspended"),
    "ev_customer.sms_opt_out": ("退订短信", "Opted out of SMS"),
    "ev_customer.sms_opt_in": ("恢复接收短信", "Opted back in to SMS"),
    "ev_customer.do_not_call": ("加入勿扰名单", "Added to do-not-call"),
    "ev_customer.do_not_call_lifted": ("移出勿扰名单", "Removed from do-not-call"),
    "ev_qa.reviewed": ("通话质检已评分", "Call QA reviewed"),
    "ev_journey": ("关怀旅程：{journey}", "Care journey: {journey}"),
    "ev_grace": ("宽限期：{status}", "Grace period: {status}"),
    "ev_other": ("{action}", "{action}"),
    "journey_birthday": ("生日关怀", "birthday"),
    "journey_plan_fit": ("套餐建议", "plan fit"),
    "journey_grace_credit": ("停机关怀", "grace credit"),
    "journey_precall_notice": ("通话前短信", "pre-call notice"),
    "journey_callback": ("定期回访", "callback"),
    # --- team --------------------------------------------------------------------------
    "team_title": ("团队概览", "Team"),
    "team_window": ("最近 {days} 天", "Last {days} days"),
    "col_workload": ("待办任务", "Open tasks"),
    "col_overdue": ("逾期", "Overdue"),
    "col_completion": ("完成率", "Completion"),
    "col_satisfaction": ("平均满意度", "Avg. satisfaction"),
    "col_capacity": ("每日容量", "Capacity"),
    "col_qa": ("质检均分", "QA score"),
    "chart_completed": ("每日完成的通话", "Calls completed per day"),
    "chart_messages": ("每日消息（按状态）", "Messages per day by status"),
    "chart_sat_tier": ("按等级的满意度", "Satisfaction by tier"),
    "chart_sat_journey": ("按旅程的满意度", "Satisfaction by journey"),
    "chart_data": ("图表数据", "Chart data"),
    "chart_empty": ("这段时间没有数据。", "No data in this period."),
    "col_date": ("日期", "Date"),
    "col_count": ("数量", "Count"),
    "col_group": ("分组", "Group"),
    "col_average": ("平均", "Average"),
    "col_calls": ("通话数", "Calls"),
    "download_team_csv": ("下载团队报表 CSV", "Download the team report (CSV)"),
    "view_day": ("查看今天", "View day"),
    # --- QA ----------------------------------------------------------------------------
    "qa_title": ("通话质检", "Call QA"),
    "qa_intro": (
        "每天抽取约 {share}% 已完成的通话供主管评分（比例见 rules/call_qa.yaml）。",
        "About {share}% of each day's completed calls are drawn for review "
        "(share set in rules/call_qa.yaml).",
    ),
    "qa_draw": ("抽取样本", "Draw the sample"),
    "qa_draw_day": ("抽样日期", "Day to sample"),
    "qa_samples": ("样本", "Samples"),
    "qa_reviewed": ("已评分", "reviewed"),
    "qa_unreviewed": ("待评分", "to review"),
    "qa_filter_reviewed": ("评分状态", "Review state"),
    "qa_none": ("没有样本。", "No samples."),
    "qa_review": ("评分", "Review"),
    "qa_per_manager": ("各客户经理质检结果（最近 30 天）", "QA results per manager (last 30 days)"),
    "qa_sampled_n": ("样本数", "Sampled"),
    "qa_reviewed_n": ("已评分", "Reviewed"),
    "criterion_accuracy": ("准确性", "Accuracy"),
    "criterion_courtesy": ("礼貌", "Courtesy"),
    "criterion_proactive_offer": ("主动推荐", "Proactive offer"),
    "qa_review_title": ("质检样本 #{id}", "QA sample #{id}"),
    "qa_call": ("通话", "The call"),
    "qa_manager_note": ("客户经理备注", "Manager's note"),
    "qa_submit": ("保存评分", "Save review"),
    "qa_already": ("已由 {who} 于 {at} 评分。", "Reviewed by {who} on {at}."),
    "qa_score_of": ("{criterion}：{score} 分", "{criterion}: {score}"),
    "err_scores": ("请为每一项打 1–5 分。", "Give every criterion a score from 1 to 5."),
    "err_qa_done": ("此样本已评分。", "This sample has already been reviewed."),
    "completed_at": ("完成时间", "Completed"),
    "download_qa_csv": ("下载质检 CSV", "Download QA (CSV)"),
    # --- settings ----------------------------------------------------------------------
    "settings_title": ("设置", "Settings"),
    "settings_language": ("界面语言", "Language"),
    "settings_language_auto": ("跟随浏览器", "Same as the browser"),
    "settings_timezone": ("时区", "Time zone"),
    "settings_timezone_auto": ("运营时区（{tz}）", "The operator's zone ({tz})"),
    "settings_save": ("保存", "Save"),
    "err_timezone": ("未知时区：{tz}", "Unknown time zone: {tz}"),
    # --- errors ------------------------------------------------------------------------
    "not_found_title": ("找不到页面", "Not found"),
    "not_found": ("没有这个页面，或您无权查看。", "There is no such page, or it is not yours."),
    "forbidden_title": ("无权访问", "Not allowed"),
    "forbidden": ("此页面仅供主管使用。", "This page is for supervisors."),
    "back_home": ("返回首页", "Back to the start page"),
    "bad_request_title": ("请求有误", "Bad request"),
    "bad_request": (
        "请求中的内容无效（例如日期格式），请返回检查后重试。",
        "Something in the request was not valid (a date, for example); go back, check it and try again.",
    ),
    "error_title": ("出错了", "Something went wrong"),
    "error": (
        "服务器出错，已记录。请稍后重试。",
        "The server hit an error; it has been logged. Please try again.",
    ),
    "unavailable_title": ("暂时无法使用", "Temporarily unavailable"),
    "db_read_only": (
        "数据库目前为只读：暂时无法登录或保存任何内容。如果您刚才在保存，内容没有保存。"
        "请稍后再试；若持续出现，请联系运维人员。",
        "The database is read-only at the moment: nobody can sign in or save anything. "
        "If you were saving something, it was not saved. Try again later; if this persists, "
        "tell your operator.",
    ),
    "db_disk_full": (
        "数据库所在的磁盘已满。如果您刚才在保存，内容没有保存。请联系运维人员释放空间后再试。",
        "The database's disk is full. If you were saving something, it was not saved. "
        "Tell your operator, and try again once space has been freed.",
    ),
    "db_lost": (
        "工作台暂时连接不上数据库。如果您刚才在保存，内容没有保存。请一分钟后再试。",
        "The workspace cannot reach its database right now. If you were saving something, "
        "it was not saved. Try again in a minute.",
    ),
    "db_busy": (
        "数据库正忙。如果您刚才在保存，内容没有保存。请稍后再试。",
        "The database is busy. If you were saving something, it was not saved. "
        "Try again in a moment.",
    ),
    "db_failed": (
        "数据库拒绝了这次请求。如果您刚才在保存，内容没有保存。请再试一次；若持续出现，请联系运维人员。",
        "The database refused the request. If you were saving something, it was not saved. "
        "Try again; if it keeps failing, tell your operator.",
    ),
    "export_interrupted": (
        "# 导出未完成：数据库暂时无法使用，请重新下载",
        "# export incomplete: the database became unavailable; download it again",
    ),
    "weekday_0": ("星期一", "Monday"),
    "weekday_1": ("星期二", "Tuesday"),
    "weekday_2": ("星期三", "Wednesday"),
    "weekday_3": ("星期四", "Thursday"),
    "weekday_4": ("星期五", "Friday"),
    "weekday_5": ("星期六", "Saturday"),
    "weekday_6": ("星期日", "Sunday"),
}


def translate(locale: str, key: str, **values: Any) -> str:
    """The text of ``key`` in ``locale`` with ``{name}`` placeholders filled in."""
    zh, en = MESSAGES[key]
    text = en if locale == "en" else zh
    return text.format(**values) if values else text


def label(locale: str, prefix: str, value: str | None) -> str:
    """A coded value's label (``tier_gold``); the code itself when the catalogue lacks it."""
    if value is None:
        return ""
    key = f"{prefix}_{value}"
    return translate(locale, key) if key in MESSAGES else value


def translator(locale: str) -> Callable[..., str]:
    def t(key: str, **values: Any) -> str:
        return translate(locale, key, **values)

    return t


def negotiate(accept_language: str | None) -> str:
    """The best of our locales for an ``Accept-Language`` header; zh-CN when none fits."""
    best: tuple[float, int, str] | None = None
    for position, part in enumerate((accept_language or "").split(",")):
        piece = part.strip()
        if not piece:
            continue
        tag, _, params = piece.partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        locale = {"zh": "zh-CN", "en": "en"}.get(primary)
        if locale is None or quality <= 0:
            continue
        candidate = (-quality, position, locale)
        if best is None or candidate < best:
            best = candidate
    return best[2] if best else DEFAULT_LOCALE


def pick_locale(saved: str | None, cookie: str | None, accept_language: str | None) -> str:
    for choice in (saved, cookie):
        if choice in LOCALES:
            return str(choice)
    return negotiate(accept_language)
