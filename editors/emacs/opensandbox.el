;;; opensandbox.el --- Run code and edit files in OpenSandbox sandboxes  -*- lexical-binding: t; -*-

;; Author: The opensandbox-bridge authors
;; Maintainer: The opensandbox-bridge authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: processes, tools
;; URL: https://github.com/opensandbox/opensandbox-bridge

;; This file is not part of GNU Emacs.

;;; Commentary:

;; A client for OpenSandbox code sandboxes.  It spawns `opensandbox-bridge'
;; (a JSON-RPC 2.0 server on stdin/stdout, language-server style) with the
;; built-in jsonrpc.el and drives sandboxes through it:
;;
;;   M-x opensandbox-run            run a shell command; output streams into
;;                                  *opensandbox*, which ends with the exit status
;;   M-x opensandbox-run-region     run the region with the buffer's interpreter
;;   M-x opensandbox-run-buffer     run the buffer (shebang or major mode)
;;   M-x opensandbox-find-file      edit a sandbox file; `save-buffer' writes it back
;;   M-x opensandbox-list-files     browse a sandbox directory
;;   M-x opensandbox-upload-file    copy a local file into the sandbox
;;   M-x opensandbox-download-file  copy a sandbox file to a local file
;;   M-x opensandbox-stop           cancel the running commands
;;   M-x opensandbox-destroy        destroy the current sandbox
;;   M-x opensandbox-show-log       the bridge's stderr and the JSON-RPC traffic
;;
;; Lisp API: `opensandbox-request', `opensandbox-async-request',
;; `opensandbox-cancel', `opensandbox-start-run', `opensandbox-sandbox-id'.
;;
;; Without `opensandbox-url' the bridge runs sandboxes itself (its embedded
;; local backend); with it, it talks to an OpenSandbox server.  The API key
;; comes from the environment (OPENSANDBOX_API_KEY) or from auth-source, and
;; reaches the bridge through its environment, never its command line.
;; When Emacs exits, the sandboxes this package created are destroyed and the
;; bridge is shut down (killed if it lingers).  See README.md.

;;; Code:

(require 'cl-lib)
(require 'jsonrpc)
(require 'subr-x)
(require 'tabulated-list)

(defconst opensandbox-version "0.1.0"
  "Version of the opensandbox package.")

;;;; Customization

(defgroup opensandbox nil
  "Run code and edit files in OpenSandbox sandboxes."
  :group 'tools
  :prefix "opensandbox-")

(defcustom opensandbox-bridge-program "opensandbox-bridge"
  "The bridge executable: a file name, or a command found on `exec-path'."
  :type 'string)

(defcustom opensandbox-bridge-args nil
  "Extra command-line arguments for the bridge, such as (\"--log-level\" \"info\")."
  :type '(repeat string))

(defcustom opensandbox-url nil
  "Base URL of an OpenSandbox server, or nil for the bridge's local backend."
  :type '(choice (const :tag "Local backend (no server)" nil) string))

(defcustom opensandbox-grpc-port nil
  "gRPC port of the OpenSandbox server, or nil for the bridge's default."
  :type '(choice (const :tag "Default" nil) integer))

(defcustom opensandbox-use-auth-source t
  "Whether to look the API key up with auth-source.
Used when `opensandbox-url' is set and OPENSANDBOX_API_KEY is not in the
environment: the secret of the auth-source entry whose host is the URL's
host (and whose user, if any, is \"opensandbox\")."
  :type 'boolean)

(defcustom opensandbox-request-timeout 30
  "Seconds to wait for the reply to a request (runs get their own bound)."
  :type 'number)

(defcustom opensandbox-start-timeout 10
  "Seconds to wait for the bridge to answer `initialize'."
  :type 'number)

(defcustom opensandbox-run-timeout 300
  "Time limit in seconds for a command started by the commands of this package.
Sent as the run's `timeoutMs'; the reply is awaited 35 seconds longer."
  :type 'number)

(defcustom opensandbox-exit-timeout 3
  "Seconds Emacs may spend at exit destroying sandboxes and stopping the bridge."
  :type 'number)

(defcustom opensandbox-log-size 2000000
  "Characters of JSON-RPC traffic kept in the log buffer; 0 disables the log.
nil keeps everything."
  :type '(choice (const :tag "Unlimited" nil) integer))

(defcustom opensandbox-stderr-lines 10
  "How many of the bridge's last stderr lines to show when it fails."
  :type 'integer)

(defcustom opensandbox-interpreters
  '((python-mode "python3") (python-ts-mode "python3")
    (js-mode "node") (js2-mode "node") (js-ts-mode "node")
    (perl-mode "perl") (cperl-mode "perl")
    (ruby-mode "ruby") (ruby-ts-mode "ruby")
    (lua-mode "lua")
    (sh-mode "sh") (bash-ts-mode "bash"))
  "Interpreter used by `opensandbox-run-buffer' for each major mode.
Each element is (MODE PROGRAM ARGS...).  A shebang line takes precedence;
in `sh-mode' the buffer's shell (`sh-shell') is used."
  :type '(alist :key-type symbol :value-type (repeat string)))

(defcustom opensandbox-output-buffer-name "*opensandbox*"
  "Name of the buffer run output goes to."
  :type 'string)

(defface opensandbox-stderr '((t :inherit error))
  "Face for a command's standard error in the output buffer.")

(defface opensandbox-header '((t :inherit bold))
  "Face for the command line above its output.")

(defface opensandbox-status '((t :inherit shadow))
  "Face for the line giving a command's exit status.")

;;;; Errors

(define-error 'opensandbox-error "OpenSandbox error")

(defun opensandbox--error (type message &rest props)
  "An `opensandbox-error' condition of TYPE with MESSAGE and PROPS.
The condition is (opensandbox-error TEXT . PLIST): TEXT is \"TYPE: MESSAGE\"
and PLIST has :type, :message and whatever PROPS adds (:code, :data, :method)."
  (cons 'opensandbox-error
        (cons (format "%s: %s" type message)
              (append (list :type type :message message) props))))

(defun opensandbox-error-type (err)
  "The error class named by ERR, an `opensandbox-error' condition.
For errors from the bridge this is `data.type' (\"SandboxNotFoundError\"...)."
  (plist-get (cddr err) :type))

(defun opensandbox-error-message (err)
  "The message of ERR, an `opensandbox-error' condition."
  (plist-get (cddr err) :message))

(defun opensandbox-error-code (err)
  "The JSON-RPC error code of ERR, an `opensandbox-error' condition, or nil."
  (plist-get (cddr err) :code))

(defun opensandbox-error-data (err)
  "The JSON-RPC `error.data' of ERR (a plist), an `opensandbox-error' condition."
  (plist-get (cddr err) :data))

(defun opensandbox-error-text (err)
  "A one-line description of ERR, \"TYPE: message\"."
  (if (eq (car-safe err) 'opensandbox-error)
      (cadr err)
    (error-message-string err)))

(defmacro opensandbox--with-errors (&rest body)
  "Run BODY; turn an `opensandbox-error' into a `user-error' with its text."
  (declare (indent 0) (debug t))
  `(condition-case err
       (progn ,@body)
     (opensandbox-error (user-error "opensandbox: %s" (opensandbox-error-text err)))))

(defconst opensandbox--code-types
  '((-32700 . "ParseError") (-32600 . "InvalidRequest") (-32601 . "MethodNotFound")
    (-32602 . "InvalidParams") (-32603 . "InternalError") (-32800 . "RequestCancelled"))
  "Names for the standard JSON-RPC error codes, which carry no data.type.")

;;;; The connection

(defclass opensandbox--bridge-connection (jsonrpc-process-connection)
  ((proc :initform nil :accessor opensandbox--conn-proc)
   (last-id :initform nil :accessor opensandbox--conn-last-id)
   (backend :initform nil :accessor opensandbox--conn-backend)
   (methods :initform nil :accessor opensandbox--conn-methods)
   (features :initform 'unknown :accessor opensandbox--conn-features)
   (stopping :initform nil :accessor opensandbox--conn-stopping)
   (death :initform nil :accessor opensandbox--conn-death))
  :documentation "A bridge process and what it told us about itself.")

(cl-defmethod jsonrpc-connection-send :around
  ((conn opensandbox--bridge-connection) &rest args &key id method &allow-other-keys)
  "Remember the id of each request CONN sends; send string METHODs by name.
Emacs 28's jsonrpc.el puts a string method on the wire as null, so a
string is interned first.  ARGS are the message members."
  (when (and id method)
    (setf (opensandbox--conn-last-id conn) id))
  (if (stringp method)
      (apply #'cl-call-next-method conn (plist-put (copy-sequence args) :method (intern method)))
    (cl-call-next-method)))

(defvar opensandbox--conn nil "The live bridge connection, or nil.")
(defvar opensandbox--sandbox-id nil "The sandbox the commands use, or nil.")
(defvar opensandbox--created nil "Ids of the sandboxes this package created.")
(defvar opensandbox--progress (make-hash-table :test #'equal)
  "Map from a run's partialResultToken to (ON-OUTPUT . GOT-CHUNK-P).")
(defvar opensandbox--counter 0 "Counter for tokens and file names.")
(defvar opensandbox--log-name "opensandbox-bridge"
  "Name of the jsonrpc connection; its buffers are named after it.")

(defun opensandbox--program ()
  "The bridge executable's absolute file name, or signal why there is none."
  (let ((prog opensandbox-bridge-program))
    (if (file-name-directory prog)
        (let ((file (expand-file-name prog)))
          (cond ((not (file-exists-p file))
                 (signal 'opensandbox-error
                         (cdr (opensandbox--error "BridgeSpawnError"
                                                  (format "%s: no such file" file)))))
                ((or (file-directory-p file) (not (file-executable-p file)))
                 (signal 'opensandbox-error
                         (cdr (opensandbox--error
                               "BridgeSpawnError"
                               (format "%s: not executable (no exec permission)" file)))))
                (t (opensandbox--check-executable file))))
      (opensandbox--check-executable
       (or (executable-find prog)
           (signal 'opensandbox-error
                   (cdr (opensandbox--error
                         "BridgeSpawnError"
                         (format "%s not found on exec-path (set `opensandbox-bridge-program')"
                                 prog)))))))))

(defconst opensandbox--elf-machines
  '(("x86_64" 62 3) ("i[3-6]86" 3) ("aarch64" 183 40) ("arm" 40) ("riscv64" 243)
    ("powerpc64le" 21) ("s390x" 22))
  "ELF machine numbers each kind of host can run.
Keys are regexps matched at the start of `system-configuration'.")

(defun opensandbox--check-executable (file)
  "Return FILE, or signal an error when it cannot run here.
That is an ELF for another machine, or a script whose interpreter is
missing.  Checking first matters: an exec
that fails races with the first write to the child, and in batch mode Emacs
dies of the SIGPIPE that write may get."
  (let ((head (with-temp-buffer
                (set-buffer-multibyte nil)
                (ignore-errors (insert-file-contents-literally file nil 0 256))
                (buffer-string)))
        (fail (lambda (why)
                (signal 'opensandbox-error
                        (cdr (opensandbox--error "BridgeSpawnError"
                                                 (format "%s: %s" file why)))))))
    (cond
     ((and (>= (length head) 20) (string-prefix-p "\177ELF" head))
      (let* ((little (= (aref head 5) 1))
             (machine (if little
                          (+ (aref head 18) (* 256 (aref head 19)))
                        (+ (aref head 19) (* 256 (aref head 18)))))
             (host (cl-find-if (lambda (e) (string-match-p (concat "\\`" (car e))
                                                           system-configuration))
                               opensandbox--elf-machines)))
        (when (and host (not (memq machine (cdr host))))
          (funcall fail (format "wrong architecture (ELF machine %d; this host is %s)"
                                machine system-configuration)))))
     ((string-match "\\`#![ \t]*\\([^ \t\n]+\\)" head)
      (let ((interp (match-string 1 head)))
        (unless (file-executable-p interp)
          (funcall fail (format "its interpreter %s is missing" interp))))))
    file))

(defun opensandbox--bridge-args ()
  "The bridge's command-line arguments."
  (append (and opensandbox-url (list "--url" opensandbox-url))
          (and opensandbox-grpc-port
               (list "--grpc-port" (number-to-string opensandbox-grpc-port)))
          opensandbox-bridge-args))

(declare-function auth-source-search "auth-source" (&rest spec))
(declare-function url-generic-parse-url "url-parse" (url))
(declare-function url-host "url-parse" (cl-x))

(defun opensandbox--api-key ()
  "The API key from auth-source for `opensandbox-url', or nil."
  (when (and opensandbox-url opensandbox-use-auth-source
             (not (getenv "OPENSANDBOX_API_KEY")))
    (require 'auth-source)
    (require 'url-parse)
    (let* ((host (url-host (url-generic-parse-url opensandbox-url)))
           (found (and host (car (auth-source-search :host host :max 1))))
           (secret (plist-get found :secret)))
      (if (functionp secret) (funcall secret) secret))))

(defun opensandbox--running-p (proc)
  "Non-nil while the process PROC has not exited.
Asks /proc as well as Emacs: when `kill-emacs' runs on SIGTERM, signals
are blocked, so Emacs never learns that a child exited."
  (and (process-live-p proc)
       (let ((attrs (process-attributes (process-id proc))))
         (and attrs (not (member (alist-get 'state attrs) '("Z" "X")))))))

(defun opensandbox--wait (pred deadline)
  "Wait until PRED returns non-nil or DEADLINE (a `float-time') passes.
Uses `sleep-for', which also runs process filters: `accept-process-output'
on a child whose exit Emacs cannot see (signals blocked) spins forever."
  (while (and (not (funcall pred)) (< (float-time) deadline))
    (sleep-for 0.01)))

(defun opensandbox--stderr-tail (conn)
  "The last `opensandbox-stderr-lines' lines the bridge of CONN wrote on stderr.
Reads what is still in the pipe first (briefly), so the lines are there even
when the bridge has just exited."
  (let* ((buf (ignore-errors (jsonrpc-stderr-buffer conn)))
         (sp (and (buffer-live-p buf) (get-buffer-process buf)))
         (deadline (+ (float-time) 0.5)))
    ;; The pipe closes once everything was read.  Not `accept-process-output'
    ;; on it: that spins when signals are blocked (see `opensandbox--wait').
    (when sp
      (opensandbox--wait (lambda () (not (process-live-p sp))) deadline))
    (if (not (buffer-live-p buf))
        ""
      (with-current-buffer buf
        (let* ((lines (split-string (buffer-string) "\n" t "[ \t\r]+"))
               ;; A usage text after an error message buries it: drop it.
               (usage (cl-position-if (lambda (l) (string-prefix-p "usage:" l)) lines)))
          (when (and usage (> usage 0))
            (setq lines (butlast lines (- (length lines) usage))))
          (string-join (last lines opensandbox-stderr-lines) "\n"))))))

(defun opensandbox--death-text (conn)
  "Why the bridge of CONN is gone: exit status and its last stderr lines."
  (or (opensandbox--conn-death conn)
      (setf (opensandbox--conn-death conn)
            (let* ((proc (opensandbox--conn-proc conn))
                   (status (and proc (process-status proc)))
                   (tail (opensandbox--stderr-tail conn)))
              (concat "the bridge "
                      (pcase status
                        ('signal (format "was killed by signal %d" (process-exit-status proc)))
                        ('exit (format "exited with status %d" (process-exit-status proc)))
                        (_ "is gone"))
                      (if (string-empty-p tail)
                          " (no stderr output)"
                        (concat "; its last stderr lines:\n" tail)))))))

(defun opensandbox--forget (conn)
  "Forget CONN, whose bridge is gone, and the sandboxes that died with it."
  (when (eq conn opensandbox--conn)
    (setq opensandbox--conn nil)
    ;; The local backend's sandboxes live inside the bridge process.
    (when (equal (opensandbox--conn-backend conn) "local")
      (setq opensandbox--sandbox-id nil
            opensandbox--created nil))))

(defun opensandbox--on-shutdown (conn)
  "Called by jsonrpc.el when the bridge of CONN has exited."
  (let ((current (eq conn opensandbox--conn)))
    (opensandbox--forget conn)
    (when (and current (not (opensandbox--conn-stopping conn)))
      (message "opensandbox: %s" (opensandbox--death-text conn)))))

(defun opensandbox--notification (_conn method params)
  "Handle notification METHOD with PARAMS from the bridge."
  (when (eq method '$/progress)
    (let* ((token (plist-get params :token))
           (entry (gethash token opensandbox--progress))
           (value (plist-get params :value)))
      (when entry
        (setcdr entry t)
        (let ((out (plist-get value :stdout))
              (err (plist-get value :stderr)))
          (when (and out (not (string-empty-p out))) (funcall (car entry) 'stdout out))
          (when (and err (not (string-empty-p err))) (funcall (car entry) 'stderr err)))))))

(defun opensandbox--start ()
  "Spawn the bridge and initialize it; return the connection."
  (let* ((program (opensandbox--program))
         (command (cons program (opensandbox--bridge-args)))
         (key (opensandbox--api-key))
         (process-environment (if key
                                  (cons (concat "OPENSANDBOX_API_KEY=" key)
                                        process-environment)
                                process-environment))
         (default-directory (expand-file-name "~/"))
         ;; Replies are small: reading them at once beats batching them up.
         (process-adaptive-read-buffering nil)
         (name opensandbox--log-name)
         proc conn)
    (setq conn (apply
                #'make-instance
                'opensandbox--bridge-connection
                :name name
                :notification-dispatcher #'opensandbox--notification
                :on-shutdown #'opensandbox--on-shutdown
                :process (lambda ()
                           (setq proc (make-process
                                       :name name :command command
                                       :connection-type 'pipe
                                       :coding 'utf-8-emacs-unix
                                       :noquery t :file-handler nil
                                       ;; jsonrpc.el picks up the buffer of this name.
                                       :stderr (get-buffer-create
                                                (format "*%s stderr*" name))))
                           ;; No "Process ... finished" line in the stderr text.
                           (let ((sp (get-buffer-process (format "*%s stderr*" name))))
                             (when sp (set-process-sentinel sp #'ignore)))
                           proc)
                ;; jsonrpc.el 1.0.19 (Emacs 30) replaced the scrollback initarg.
                (if (slot-exists-p 'jsonrpc-connection '-events-buffer-config)
                    (list :events-buffer-config (list :size opensandbox-log-size))
                  (list :events-buffer-scrollback-size opensandbox-log-size))))
    (setf (opensandbox--conn-proc conn) proc)
    (setq opensandbox--conn conn)
    (let ((result (opensandbox--sync
                   conn "initialize"
                   (list :processId (emacs-pid)
                         :clientInfo (list :name "opensandbox.el" :version opensandbox-version))
                   opensandbox-start-timeout)))
      (let ((caps (plist-get result :capabilities)))
        (setf (opensandbox--conn-backend conn) (plist-get caps :backend))
        (setf (opensandbox--conn-methods conn) (append (plist-get caps :methods) nil))))
    (jsonrpc-notify conn 'initialized nil)
    conn))

(defun opensandbox--connection ()
  "The live bridge connection, starting the bridge when there is none.
A bridge that died is noticed here and replaced by a new one."
  (let ((conn opensandbox--conn))
    (if (and conn (jsonrpc-running-p conn))
        conn
      (when conn
        (opensandbox--forget conn)
        (ignore-errors (delete-process (opensandbox--conn-proc conn))))
      (condition-case err
          (opensandbox--start)
        (opensandbox-error
         (when (and opensandbox--conn (not (eq opensandbox--conn conn)))
           (opensandbox--stop-bridge opensandbox--conn 1))
         (setq opensandbox--conn nil)
         (signal (car err) (cdr err)))))))

(defun opensandbox-bridge-has-method-p (method)
  "Non-nil when the running bridge serves METHOD (a string)."
  (member method (opensandbox--conn-methods (opensandbox--connection))))

(defun opensandbox-bridge-feature-p (feature)
  "Non-nil when the bridge's backend can do FEATURE (a string).
FEATURE is one of the `features' server/health lists: \"stream\", \"exec\",
\"stdin\", \"upload\".  Asked once per bridge; a bridge that lists no
features can do none of them."
  (let ((conn (opensandbox--connection)))
    (when (eq (opensandbox--conn-features conn) 'unknown)
      (setf (opensandbox--conn-features conn)
            (append (plist-get (opensandbox-request "server/health" nil) :features) nil)))
    (member feature (opensandbox--conn-features conn))))

(defun opensandbox--host-files-p (method)
  "Non-nil when host-file METHOD (fs/upload, fs/download) can be used."
  (and (opensandbox-bridge-has-method-p method)
       (opensandbox-bridge-feature-p "upload")))

;;;; Requests

(defun opensandbox--rpc-error (conn method err)
  "An `opensandbox-error' condition for ERR, the error object from a reply.
CONN is the connection and METHOD the request's method."
  (let* ((code (plist-get err :code))
         (message (or (plist-get err :message) "unknown error"))
         (data (plist-get err :data))
         (type (or (and (listp data) (plist-get data :type))
                   (cdr (assq code opensandbox--code-types)))))
    (if (eql code -1)           ; jsonrpc.el's "Server died"
        (opensandbox--error "BridgeExited"
                            (if (opensandbox--conn-stopping conn)
                                "the bridge was stopped"
                              (opensandbox--death-text conn))
                            :method method)
      (opensandbox--error (or type "JsonRpcError") message
                          :code code :data data :method method))))

(defun opensandbox--timeout-for (method params)
  "Seconds to wait for the reply to METHOD with PARAMS."
  (if (member method '("sandbox/run" sandbox/run))
      (+ 35 (/ (or (and (listp params) (plist-get params :timeoutMs)) 300000) 1000.0))
    opensandbox-request-timeout))

(defun opensandbox--send (conn method params callback timeout)
  "Send METHOD with PARAMS on CONN; call CALLBACK with (ERR RESULT) once.
TIMEOUT is in seconds; when it passes the request is cancelled on the
bridge and CALLBACK gets a RequestTimeout error.  Return the request id."
  (let ((name (format "%s" method))
        id)
    (unless (process-live-p (opensandbox--conn-proc conn))
      ;; Gone before jsonrpc.el noticed (say, exec failed): say why, now.
      (let ((err (opensandbox--error "BridgeExited" (opensandbox--death-text conn)
                                     :method name)))
        (signal (car err) (cdr err))))
    (jsonrpc-async-request
     conn (if (stringp method) (intern method) method) params
     :success-fn (lambda (result) (funcall callback nil result))
     :error-fn (lambda (err) (funcall callback (opensandbox--rpc-error conn name err) nil))
     :timeout timeout
     :timeout-fn (lambda ()
                   (opensandbox--cancel-on conn id)
                   (funcall callback
                            (opensandbox--error "RequestTimeout"
                                                (format "no reply to %s within %s s"
                                                        name timeout)
                                                :method name)
                            nil)))
    (setq id (opensandbox--conn-last-id conn))
    id))

(defun opensandbox--sync (conn method params timeout)
  "Send METHOD with PARAMS on CONN and wait up to TIMEOUT seconds for the result.
A quit (\\[keyboard-quit]) while waiting cancels the request on the bridge."
  (let (done err result id)
    (setq id (opensandbox--send conn method params
                                (lambda (e r) (setq done t err e result r))
                                timeout))
    (unwind-protect
        (while (not done)
          (accept-process-output nil 0.1))
      (unless done
        (opensandbox--cancel-on conn id)))
    (if err (signal (car err) (cdr err)) result)))

(defun opensandbox--cancel-on (conn id)
  "Ask the bridge of CONN to cancel request ID."
  (when (and conn id (jsonrpc-running-p conn))
    (ignore-errors (jsonrpc-notify conn '$/cancelRequest (list :id id)))))

;;;###autoload
(defun opensandbox-request (method params &optional timeout)
  "Send METHOD with PARAMS to the bridge, wait for the reply and return its result.
METHOD is a string such as \"sandbox/run\"; PARAMS a plist such as
\(:sandboxId ID :command \"ls\") or nil.  JSON arrays are vectors, false is
`:json-false', and objects in the result are plists.  TIMEOUT (seconds)
defaults to `opensandbox-request-timeout' (for sandbox/run: its timeoutMs
plus 35 s).  The bridge is started, or restarted, as needed.
A failure signals `opensandbox-error' whose data is (TEXT . PLIST): see
`opensandbox-error-type', `opensandbox-error-message',
`opensandbox-error-code' and `opensandbox-error-data'."
  (opensandbox--sync (opensandbox--connection) method params
                     (or timeout (opensandbox--timeout-for method params))))

;;;###autoload
(defun opensandbox-async-request (method params callback &optional timeout)
  "Send METHOD with PARAMS to the bridge and return at once with the request id.
CALLBACK is called once with two arguments (ERR RESULT): ERR is nil on
success, else an `opensandbox-error' condition (see `opensandbox-request');
a request that gets no reply within TIMEOUT seconds is cancelled and
completes with a RequestTimeout error.  The id can be given to
`opensandbox-cancel'."
  (opensandbox--send (opensandbox--connection) method params callback
                     (or timeout (opensandbox--timeout-for method params))))

(defun opensandbox-cancel (id)
  "Cancel request ID (sends $/cancelRequest); its callback gets RequestCancelled."
  (opensandbox--cancel-on opensandbox--conn id))

;;;; Sandboxes and runs

(defun opensandbox-sandbox-id ()
  "The id of the sandbox the commands use, creating it when there is none."
  (let ((conn (opensandbox--connection)))
    (or (and (eq conn opensandbox--conn) opensandbox--sandbox-id)
        (let ((id (plist-get (opensandbox-request "sandbox/create" nil) :sandboxId)))
          (push id opensandbox--created)
          (setq opensandbox--sandbox-id id)))))

(defun opensandbox--sandbox-gone (err sandbox)
  "Forget SANDBOX when ERR says it no longer exists."
  (when (and (equal (opensandbox-error-type err) "SandboxNotFoundError")
             (equal sandbox opensandbox--sandbox-id))
    (setq opensandbox--sandbox-id nil
          opensandbox--created (delete sandbox opensandbox--created))))

(defun opensandbox-start-run (params on-output on-exit)
  "Start sandbox/run with PARAMS and stream its output; return the request id.
PARAMS is a plist with :command (or :argv, a vector) and optionally
:sandboxId (default: `opensandbox-sandbox-id'), :timeoutMs, :env, :cwd.
ON-OUTPUT is called with (STREAM TEXT), STREAM being `stdout' or `stderr',
as output arrives.  ON-EXIT is called with (ERR RESULT) at the end, after
all output.  Bridges without streaming deliver the output with the result,
and ON-OUTPUT still sees it before ON-EXIT."
  (let* ((token (format "opensandbox-%d" (cl-incf opensandbox--counter)))
         (entry (cons on-output nil))
         (params (append (list :partialResultToken token)
                         (unless (plist-member params :sandboxId)
                           (list :sandboxId (opensandbox-sandbox-id)))
                         params)))
    (puthash token entry opensandbox--progress)
    (condition-case err
        (opensandbox-async-request
         "sandbox/run" params
         (lambda (err result)
           (remhash token opensandbox--progress)
           (when (and result (not (cdr entry)))
             (let ((out (plist-get result :stdout))
                   (errout (plist-get result :stderr)))
               (when (and out (not (string-empty-p out))) (funcall on-output 'stdout out))
               (when (and errout (not (string-empty-p errout)))
                 (funcall on-output 'stderr errout))))
           (when err (opensandbox--sandbox-gone err (plist-get params :sandboxId)))
           (funcall on-exit err result)))
      (error (remhash token opensandbox--progress)
             (signal (car err) (cdr err))))))

(defvar opensandbox--active-runs nil "Request ids of the runs the commands started.")

(defvar opensandbox-output-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "C-c C-c") #'opensandbox-stop)
    map)
  "Keymap for `opensandbox-output-mode'.")

(defvar opensandbox--last-run nil "(PARAMS LABEL) of the last run started by a command.")

(define-derived-mode opensandbox-output-mode special-mode "OpenSandbox"
  "Major mode of the buffer run output streams into.
\\<opensandbox-output-mode-map>\\[opensandbox-stop] stops the commands,
and g (`revert-buffer') runs the last one again."
  (setq-local buffer-undo-list t)
  (setq-local revert-buffer-function
              (lambda (&rest _)
                (if opensandbox--last-run
                    (apply #'opensandbox--run-into-buffer opensandbox--last-run)
                  (user-error "opensandbox: nothing has run yet")))))

(defun opensandbox--output-buffer ()
  "The run output buffer."
  (let ((buf (get-buffer-create opensandbox-output-buffer-name)))
    (with-current-buffer buf
      (unless (derived-mode-p 'opensandbox-output-mode)
        (opensandbox-output-mode)))
    buf))

(defun opensandbox--append (buf text &optional face)
  "Append TEXT to BUF in FACE; windows showing its end follow."
  (when (buffer-live-p buf)
    (with-current-buffer buf
      (let ((inhibit-read-only t))
        (save-excursion
          (goto-char (point-max))
          (insert-before-markers (if face (propertize text 'face face) text)))
        (dolist (win (get-buffer-window-list buf nil t))
          (when (>= (window-point win) (- (point-max) (length text)))
            (set-window-point win (point-max))))))))

(defun opensandbox--status-line (err result seconds)
  "The line ending a run's output, for ERR or RESULT after SECONDS."
  (let ((time (format " (%.2f s)" seconds)))
    (cond
     ((and err (eql (opensandbox-error-code err) -32800)) "[opensandbox] cancelled\n")
     (err (format "[opensandbox] error: %s\n" (opensandbox-error-text err)))
     (t (concat (if (eq (plist-get result :truncated) t) "[opensandbox] output truncated\n" "")
                (let ((sig (plist-get result :signal)))
                  (if (and (integerp sig) (> sig 0))
                      (format "[opensandbox] killed by signal %d%s\n" sig time)
                    (format "[opensandbox] exit status %s%s\n"
                            (plist-get result :exitCode) time))))))))

(defun opensandbox--run-into-buffer (params label)
  "Run sandbox/run with PARAMS, streaming into the output buffer under LABEL.
Return the request id."
  (setq opensandbox--last-run (list params label))
  (let ((buf (opensandbox--output-buffer))
        (start (float-time))
        (sandbox (opensandbox--with-errors (opensandbox-sandbox-id)))
        id)
    (with-current-buffer buf
      (let ((inhibit-read-only t))
        (unless opensandbox--active-runs
          (erase-buffer))))
    (opensandbox--append buf (format "$ %s\n" label) 'opensandbox-header)
    (display-buffer buf)
    (let ((last-char ?\n))
      (setq id
            (opensandbox--with-errors
              (opensandbox-start-run
               (append (list :sandboxId sandbox
                             :timeoutMs (round (* 1000 opensandbox-run-timeout)))
                       params)
               (lambda (stream text)
                 (setq last-char (aref text (1- (length text))))
                 (opensandbox--append buf text (and (eq stream 'stderr) 'opensandbox-stderr)))
               (lambda (err result)
                 (setq opensandbox--active-runs (delq id opensandbox--active-runs))
                 (unless (eq last-char ?\n) (opensandbox--append buf "\n"))
                 (opensandbox--append buf (opensandbox--status-line err result
                                                                    (- (float-time) start))
                                      'opensandbox-status)))))
      (push id opensandbox--active-runs)
      id)))

;;;###autoload
(defun opensandbox-run (command)
  "Run the shell COMMAND in the sandbox; its output streams into *opensandbox*.
The buffer ends with a line giving the exit status.  Return the request id."
  (interactive (list (read-shell-command "Run in sandbox: ")))
  (opensandbox--run-into-buffer (list :command command) command))

(defvar sh-shell)

(defun opensandbox--interpreter ()
  "The argv prefix that runs the current buffer: shebang, else major mode."
  (save-excursion
    (goto-char (point-min))
    (cond
     ((looking-at "#![ \t]*\\(.+\\)$")
      (split-string-and-unquote (match-string-no-properties 1)))
     ((and (derived-mode-p 'sh-mode) (boundp 'sh-shell) sh-shell)
      (list (symbol-name sh-shell)))
     ((cl-loop for (mode . argv) in opensandbox-interpreters
               when (derived-mode-p mode) return argv))
     (t (user-error "opensandbox: no interpreter for %s (add a shebang or see `opensandbox-interpreters')"
                    major-mode)))))

(defun opensandbox--run-text (text argv label)
  "Write TEXT to a file in the sandbox and run it with ARGV; LABEL names it."
  (let* ((sandbox (opensandbox--with-errors (opensandbox-sandbox-id)))
         (ext (and buffer-file-name (file-name-extension buffer-file-name t)))
         (path (format "/tmp/opensandbox-run-%d%s" (cl-incf opensandbox--counter) (or ext "")))
         (command (mapconcat #'shell-quote-argument (append argv (list path)) " ")))
    (opensandbox--with-errors
      (opensandbox-request "fs/write" (list :sandboxId sandbox :path path :content text)))
    (opensandbox--run-into-buffer (list :command command)
                                  (format "%s  # %s" command label))))

;;;###autoload
(defun opensandbox-run-buffer ()
  "Run the current buffer in the sandbox with its interpreter.
The interpreter comes from the shebang line, else from the major mode
\(see `opensandbox-interpreters').  Return the request id."
  (interactive)
  (opensandbox--run-text (save-restriction (widen) (buffer-substring-no-properties
                                                    (point-min) (point-max)))
                         (opensandbox--interpreter) (buffer-name)))

;;;###autoload
(defun opensandbox-run-region (start end)
  "Run the text from START to END with the buffer's interpreter in the sandbox.
Without a shebang or known major mode the text runs as a shell script."
  (interactive "r")
  (let ((argv (condition-case nil (opensandbox--interpreter) (user-error '("sh")))))
    (opensandbox--run-text (buffer-substring-no-properties start end) argv
                           (format "region of %s" (buffer-name)))))

;;;###autoload
(defun opensandbox-stop ()
  "Cancel the commands started by `opensandbox-run' and friends that still run."
  (interactive)
  (if (not opensandbox--active-runs)
      (message "opensandbox: no command is running")
    (mapc #'opensandbox-cancel opensandbox--active-runs)
    (message "opensandbox: cancelling %d command(s)" (length opensandbox--active-runs))))

;;;###autoload
(defun opensandbox-destroy ()
  "Destroy the current sandbox; the next command creates a new one."
  (interactive)
  (let ((id opensandbox--sandbox-id))
    (if (not id)
        (message "opensandbox: no sandbox")
      (opensandbox--with-errors
        (unwind-protect
            (opensandbox-request "sandbox/destroy" (list :sandboxId id))
          (setq opensandbox--sandbox-id nil
                opensandbox--created (delete id opensandbox--created))))
      (message "opensandbox: destroyed sandbox %s" id))))

;;;; Sandbox files in buffers

(defvar-local opensandbox--file-sandbox nil "Sandbox of the file this buffer edits.")
(defvar-local opensandbox--file-path nil "Sandbox path of the file this buffer edits.")
(put 'opensandbox--file-sandbox 'permanent-local t)
(put 'opensandbox--file-path 'permanent-local t)

(defun opensandbox--read-bytes (sandbox path)
  "The content of PATH in SANDBOX, as a unibyte string."
  (base64-decode-string
   (plist-get (opensandbox-request "fs/read" (list :sandboxId sandbox :path path
                                                   :encoding "base64"))
              :content)))

(defun opensandbox--write-bytes (sandbox path bytes)
  "Write the unibyte string BYTES to PATH in SANDBOX."
  (opensandbox-request "fs/write" (list :sandboxId sandbox :path path
                                        :content (base64-encode-string bytes t)
                                        :encoding "base64")))

(defun opensandbox--file-insert ()
  "Fill the current buffer from its sandbox file, decoded as `find-file' would."
  (let* ((path opensandbox--file-path)
         (bytes (condition-case err
                    (opensandbox--read-bytes opensandbox--file-sandbox path)
                  (opensandbox-error
                   ;; A file that does not exist yet opens empty, as with `find-file'.
                   (if (and (equal (opensandbox-error-type err) "FileOperationError")
                            (string-match-p "No such file\\|ENOENT\\|not found"
                                            (format "%s" (plist-get (opensandbox-error-data err)
                                                                    :reason))))
                       nil
                     (signal (car err) (cdr err))))))
         (tmp (make-temp-file "opensandbox-" nil (file-name-extension path t))))
    (unwind-protect
        (let ((inhibit-read-only t)
              (coding-system-for-write 'no-conversion))
          (write-region (or bytes "") nil tmp nil 'silent)
          (erase-buffer)
          (insert-file-contents tmp)
          (setq buffer-file-coding-system last-coding-system-used)
          (unless bytes (message "opensandbox: (New file)")))
      (delete-file tmp))))

(defun opensandbox--file-save ()
  "Write the buffer back to its sandbox file, encoded as `save-buffer' would.
Runs from `write-contents-functions', after `require-final-newline' applied."
  (when opensandbox--file-path
    (let ((tmp (make-temp-file "opensandbox-" nil
                               (file-name-extension opensandbox--file-path t))))
      (unwind-protect
          (let ((inhibit-message t) (message-log-max nil))
            (save-restriction
              (widen)
              (write-region nil nil tmp nil 'silent))
            (setq buffer-file-coding-system last-coding-system-used)
            (opensandbox--with-errors
              (opensandbox--write-bytes
               opensandbox--file-sandbox opensandbox--file-path
               (with-temp-buffer
                 (set-buffer-multibyte nil)
                 (insert-file-contents-literally tmp)
                 (buffer-string)))))
        (delete-file tmp))
      (set-buffer-modified-p nil)
      (message "opensandbox: wrote %s" opensandbox--file-path)
      t)))

(defun opensandbox--file-revert (&optional _ignore-auto _noconfirm)
  "Re-read the buffer's sandbox file."
  (let ((pt (point)))
    (opensandbox--with-errors (opensandbox--file-insert))
    (set-buffer-modified-p nil)
    (goto-char (min pt (point-max)))))

(defun opensandbox--file-setup ()
  "Install the hooks of a sandbox file buffer (again, after a major mode change)."
  (when opensandbox--file-path
    (add-hook 'write-contents-functions #'opensandbox--file-save nil t)
    (setq-local revert-buffer-function #'opensandbox--file-revert)
    (setq-local buffer-offer-save t)))

(add-hook 'after-change-major-mode-hook #'opensandbox--file-setup)

;;;; Reading sandbox paths

(defvar opensandbox--listing-cache nil
  "(TIME SANDBOX DIR NAMES) of the last directory read for completion.")

(defun opensandbox--names (dir)
  "Names in sandbox directory DIR for completion, directories ending in /."
  (let ((sandbox (opensandbox-sandbox-id))
        (cache opensandbox--listing-cache))
    (if (and cache (equal (nth 1 cache) sandbox) (equal (nth 2 cache) dir)
             (< (- (float-time) (nth 0 cache)) 5))
        (nth 3 cache)
      (let ((names (condition-case nil
                       (mapcar (lambda (e)
                                 (concat (plist-get e :name)
                                         (if (eq (plist-get e :isDirectory) t) "/" "")))
                               (plist-get (opensandbox-request "fs/list"
                                                               (list :sandboxId sandbox :path dir))
                                          :entries))
                     (opensandbox-error nil))))
        (setq opensandbox--listing-cache (list (float-time) sandbox dir names))
        names))))

(defun opensandbox--path-table (string pred action)
  "Completion table for sandbox paths: STRING, PRED and ACTION as usual.
Completes the last component of STRING from an fs/list of its directory."
  (let ((dir (or (file-name-directory string) "")))
    (if (eq (car-safe action) 'boundaries)
        (let ((suffix (cdr action)))
          `(boundaries ,(length dir) . ,(or (string-match-p "/" suffix) (length suffix))))
      (let ((names (and (string-prefix-p "/" string) (opensandbox--names dir))))
        (cond
         ((eq action 'metadata) '(metadata (category . opensandbox-path)))
         ((null action)                 ; try-completion answers the whole string
          (let ((r (try-completion (substring string (length dir)) names pred)))
            (if (stringp r) (concat dir r) r)))
         (t (complete-with-action action names (substring string (length dir)) pred)))))))

(defun opensandbox--read-path (prompt &optional initial)
  "Read a sandbox path with PROMPT and completion; INITIAL is the start text."
  (completing-read prompt #'opensandbox--path-table nil nil (or initial "/")))

;;;###autoload
(defun opensandbox-find-file (path)
  "Edit the sandbox file PATH in a buffer; `save-buffer' writes it back.
The bytes are decoded and encoded as for a local file (coding system, end
of lines, `require-final-newline'), so what arrives in the sandbox is exactly
what Emacs would have written to disk.  Return the buffer."
  (interactive (list (opensandbox--read-path "Sandbox file: ")))
  (let* ((sandbox (opensandbox--with-errors (opensandbox-sandbox-id)))
         (buf (or (cl-find-if (lambda (b)
                                (with-current-buffer b
                                  (and (equal opensandbox--file-sandbox sandbox)
                                       (equal opensandbox--file-path path))))
                              (buffer-list))
                  (let ((new (generate-new-buffer (format "/opensandbox:%s" path))))
                    (with-current-buffer new
                      (setq opensandbox--file-sandbox sandbox
                            opensandbox--file-path path)
                      (condition-case err
                          (opensandbox--with-errors (opensandbox--file-insert))
                        (error (kill-buffer new) (signal (car err) (cdr err))))
                      (let ((buffer-file-name path))
                        (set-auto-mode))
                      (opensandbox--file-setup)
                      (set-buffer-modified-p nil)
                      (setq buffer-undo-list nil)
                      (goto-char (point-min)))
                    new))))
    (when (called-interactively-p 'any) (pop-to-buffer-same-window buf))
    buf))

;;;; Listing, upload, download

(defvar-local opensandbox--list-dir nil "Directory shown in this listing.")

(defvar opensandbox-files-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "RET") #'opensandbox-files-open)
    (define-key map (kbd "^") #'opensandbox-files-up)
    map)
  "Keymap for `opensandbox-files-mode'.")

(define-derived-mode opensandbox-files-mode tabulated-list-mode "OpenSandbox-Files"
  "A sandbox directory listing.
\\<opensandbox-files-mode-map>\\[opensandbox-files-open] opens the file or \
directory at point, \\[opensandbox-files-up] goes up."
  (setq tabulated-list-format [("Size" 10 t :right-align t) ("Name" 40 t)])
  (setq tabulated-list-padding 1)
  (setq-local revert-buffer-function
              (lambda (&rest _) (opensandbox-list-files opensandbox--list-dir)))
  (tabulated-list-init-header))

;;;###autoload
(defun opensandbox-list-files (dir)
  "List the sandbox directory DIR; RET opens a file, ^ goes up.  Return the buffer."
  (interactive (list (opensandbox--read-path "Sandbox directory: ")))
  (let* ((sandbox (opensandbox--with-errors (opensandbox-sandbox-id)))
         (entries (opensandbox--with-errors
                    (plist-get (opensandbox-request "fs/list" (list :sandboxId sandbox :path dir))
                               :entries)))
         (buf (get-buffer-create "*opensandbox files*")))
    (with-current-buffer buf
      (opensandbox-files-mode)
      (setq opensandbox--list-dir dir)
      (setq tabulated-list-entries
            (mapcar (lambda (e)
                      (let ((d (eq (plist-get e :isDirectory) t)))
                        (list (plist-get e :path)
                              (vector (if d "-" (number-to-string (or (plist-get e :size) 0)))
                                      (concat (plist-get e :name) (if d "/" ""))))))
                    entries))
      (tabulated-list-print)
      (setq header-line-format (format " %s  (sandbox %s)" dir sandbox)))
    (when (called-interactively-p 'any) (pop-to-buffer-same-window buf))
    buf))

(defun opensandbox-files-open ()
  "Open the file or directory at point in a sandbox listing."
  (interactive)
  (let ((path (tabulated-list-get-id))
        (entry (tabulated-list-get-entry)))
    (when path
      (if (string-suffix-p "/" (aref entry 1))
          (pop-to-buffer-same-window (opensandbox-list-files path))
        (pop-to-buffer-same-window (opensandbox-find-file path))))))

(defun opensandbox-files-up ()
  "List the parent of the directory shown."
  (interactive)
  (let ((dir (directory-file-name opensandbox--list-dir)))
    (pop-to-buffer-same-window
     (opensandbox-list-files (or (file-name-directory dir) "/")))))

;;;###autoload
(defun opensandbox-upload-file (local remote)
  "Copy the local file LOCAL to REMOTE in the sandbox, byte for byte."
  (interactive
   (let ((local (read-file-name "Upload local file: " nil nil t)))
     (list local (opensandbox--read-path "To sandbox path: "
                                         (concat "/tmp/" (file-name-nondirectory local))))))
  (let ((sandbox (opensandbox--with-errors (opensandbox-sandbox-id)))
        (file (expand-file-name local)))
    (opensandbox--with-errors
      (if (and (not (file-remote-p file)) (opensandbox--host-files-p "fs/upload"))
          (opensandbox-request "fs/upload" (list :sandboxId sandbox :localPath file :path remote))
        (opensandbox--write-bytes sandbox remote
                                  (with-temp-buffer
                                    (set-buffer-multibyte nil)
                                    (insert-file-contents-literally file)
                                    (buffer-string)))))
    (message "opensandbox: uploaded %s to %s" file remote)))

;;;###autoload
(defun opensandbox-download-file (remote local)
  "Copy REMOTE in the sandbox to the local file LOCAL, byte for byte."
  (interactive
   (let ((remote (opensandbox--read-path "Download sandbox file: ")))
     (list remote (read-file-name "To local file: " nil nil nil
                                  (file-name-nondirectory remote)))))
  (let ((sandbox (opensandbox--with-errors (opensandbox-sandbox-id)))
        (file (expand-file-name local)))
    (when (file-directory-p file)
      (setq file (expand-file-name (file-name-nondirectory remote) file)))
    (opensandbox--with-errors
      (if (and (not (file-remote-p file)) (opensandbox--host-files-p "fs/download"))
          (opensandbox-request "fs/download" (list :sandboxId sandbox :path remote :localPath file))
        (let ((bytes (opensandbox--read-bytes sandbox remote)))
          (with-temp-buffer
            (set-buffer-multibyte nil)
            (insert bytes)
            (let ((coding-system-for-write 'no-conversion))
              (write-region nil nil file nil 'silent))))))
    (message "opensandbox: downloaded %s to %s" remote file)))

;;;; Log, shutdown

;;;###autoload
(defun opensandbox-show-log ()
  "Show the bridge's stderr and the JSON-RPC traffic."
  (interactive)
  (display-buffer (get-buffer-create (format "*%s events*" opensandbox--log-name))))

(defun opensandbox--stop-bridge (conn budget)
  "Destroy CONN's sandboxes, then shutdown, exit, and kill it if it lingers.
BUDGET is the time allowed in seconds."
  (let* ((deadline (+ (float-time) budget))
         (proc (opensandbox--conn-proc conn))
         (current (eq conn opensandbox--conn))
         (gone (lambda () (not (opensandbox--running-p proc))))
         (pending 0))
    (setf (opensandbox--conn-stopping conn) t)
    (when (opensandbox--running-p proc)
      (ignore-errors
        (dolist (id (and current opensandbox--created))
          (cl-incf pending)
          (opensandbox--send conn "sandbox/destroy" (list :sandboxId id)
                             (lambda (&rest _) (cl-decf pending)) budget))
        (opensandbox--wait (lambda () (or (<= pending 0) (funcall gone))) deadline)
        (let (done)
          (opensandbox--send conn "shutdown" nil (lambda (&rest _) (setq done t))
                             (max 0.1 (- deadline (float-time))))
          (opensandbox--wait (lambda () (or done (funcall gone))) deadline))
        (jsonrpc-notify conn 'exit nil)
        (process-send-eof proc)))
    ;; Stop reading the bridge's stdout: when `kill-emacs' runs on SIGTERM,
    ;; signals are blocked, Emacs never sees the child exit, and its closed
    ;; pipe would make every wait below spin forever.  (Its stderr is a pipe
    ;; process, which just closes: the last lines still reach the log.)
    (when (process-live-p proc) (ignore-errors (set-process-filter proc t)))
    (opensandbox--wait gone (+ (float-time) (max 0.5 (min 1.0 (- deadline (float-time))))))
    (unless (funcall gone)
      (ignore-errors (signal-process proc 'SIGKILL))
      (opensandbox--wait gone (+ (float-time) 1)))
    (let ((sp (ignore-errors (get-buffer-process (jsonrpc-stderr-buffer conn)))))
      (when sp (opensandbox--wait (lambda () (not (process-live-p sp))) (+ (float-time) 0.5))))
    (ignore-errors (delete-process proc))
    (when current
      (setq opensandbox--conn nil
            opensandbox--sandbox-id nil
            opensandbox--created nil))))

;;;###autoload
(defun opensandbox-shutdown ()
  "Destroy the sandboxes this package created and stop the bridge."
  (interactive)
  (when opensandbox--conn
    (opensandbox--stop-bridge opensandbox--conn opensandbox-exit-timeout)))

(defun opensandbox--kill-emacs ()
  "At Emacs exit: destroy our sandboxes and stop the bridge, quickly."
  (when opensandbox--conn
    (ignore-errors (opensandbox--stop-bridge opensandbox--conn opensandbox-exit-timeout))))

(add-hook 'kill-emacs-hook #'opensandbox--kill-emacs)

;;;###autoload
(defvar opensandbox-command-map
  (let ((map (make-sparse-keymap)))
    (define-key map "r" #'opensandbox-run)
    (define-key map "b" #'opensandbox-run-buffer)
    (define-key map "R" #'opensandbox-run-region)
    (define-key map "f" #'opensandbox-find-file)
    (define-key map "l" #'opensandbox-list-files)
    (define-key map "u" #'opensandbox-upload-file)
    (define-key map "d" #'opensandbox-download-file)
    (define-key map "s" #'opensandbox-stop)
    (define-key map "k" #'opensandbox-destroy)
    (define-key map "L" #'opensandbox-show-log)
    map)
  "Keymap of the opensandbox commands, for binding to a prefix key.")

(provide 'opensandbox)
;;; opensandbox.el ends here
