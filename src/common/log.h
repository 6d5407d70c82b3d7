/* log.h - leveled logging to stderr, never stdout.
 * Thread-safe: each message is written with one write(2) so lines never interleave.
 * Layer: common. Knows nothing of JSON-RPC, sandboxes or the wire. */
#ifndef OSB_COMMON_LOG_H
#define OSB_COMMON_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE };

/* Set the most verbose level that is printed (default LOG_WARN). */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parse "error|warn|info|debug|trace". Returns 0, or -1 (level untouched) if unknown. */
int log_parse_level(const char *name, enum log_level *level);

/* Set the program name printed before each line (the pointer is kept, not copied). */
void log_set_prog(const char *prog);

/* Print one line (a newline is added) if level is enabled. Cannot fail visibly. */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_trace(...) log_msg(LOG_TRACE, __VA_ARGS__)

#endif
