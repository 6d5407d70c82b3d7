;;; opensandbox-test.el --- ERT tests for opensandbox.el against the real bridge  -*- lexical-binding: t; -*-

;;; Commentary:

;; Run in `emacs -Q --batch' by tests/e2e/test_editor_emacs.py, once per
;; backend:
;;
;;   OSB_BRIDGE=build/opensandbox-bridge [OSB_URL=http://127.0.0.1:P OSB_GRPC_PORT=G] \
;;   emacs -Q --batch -L editors/emacs -l editors/emacs/test/opensandbox-test.el \
;;         -f ert-run-tests-batch-and-exit
;;
;; Every test drives the real bridge through the package's commands and
;; checks buffers, files and what the bridge reports.  Lines starting with
;; "OSB-MEASURE" are timings for the report (never asserted).

;;; Code:

(require 'ert)
(require 'cl-lib)
(require 'subr-x)
(require 'opensandbox)

(defvar opensandbox-test-bridge (or (getenv "OSB_BRIDGE") "opensandbox-bridge"))
(defvar opensandbox-test-url (let ((u (getenv "OSB_URL"))) (and u (not (string-empty-p u)) u)))
(defvar opensandbox-test-grpc-port
  (let ((p (getenv "OSB_GRPC_PORT"))) (and p (not (string-empty-p p)) (string-to-number p))))
(defvar opensandbox-test-scale (string-to-number (or (getenv "OSB_TIMEOUT_SCALE") "1")))

(setq opensandbox-bridge-program opensandbox-test-bridge
      opensandbox-url opensandbox-test-url
      opensandbox-grpc-port opensandbox-test-grpc-port
      opensandbox-use-auth-source nil
      opensandbox-log-size nil)

(defun opensandbox-test--dump-log ()
  "Write the log (traffic and every bridge's stderr) to $OSB_EMACS_LOG at exit.
The wrapper looks there for sanitizer reports of the bridges Emacs spawned."
  (let ((file (getenv "OSB_EMACS_LOG"))
        (buf (get-buffer (format "*%s events*" opensandbox--log-name))))
    (when (and file buf)
      (with-current-buffer buf
        (let ((coding-system-for-write 'utf-8-unix))
          (write-region nil nil file nil 'silent))))))

;; Depth 90: after the package's own hook has stopped the bridge.
(add-hook 'kill-emacs-hook #'opensandbox-test--dump-log 90)

(defun opensandbox-test--wait (pred &optional seconds)
  "Wait until PRED returns non-nil or SECONDS (20) pass; return PRED's value."
  (let ((deadline (+ (float-time) (* opensandbox-test-scale (or seconds 20)))))
    (while (and (not (funcall pred)) (< (float-time) deadline))
      (accept-process-output nil 0.02))
    (funcall pred)))

(defun opensandbox-test--out ()
  "The text of the run output buffer."
  (with-current-buffer (opensandbox--output-buffer)
    (buffer-substring-no-properties (point-min) (point-max))))

(defconst opensandbox-test--status-re
  "^\\[opensandbox\\] \\(exit status\\|killed\\|cancelled\\|error\\)")

(defun opensandbox-test--wait-status (&optional seconds)
  "Wait for the output buffer's status line; return the buffer text."
  (should (opensandbox-test--wait
           (lambda () (string-match-p opensandbox-test--status-re (opensandbox-test--out)))
           seconds))
  (opensandbox-test--out))

(defun opensandbox-test--run (command)
  "Run COMMAND with `opensandbox-run' and return the output buffer's text at the end."
  (opensandbox-run command)
  (opensandbox-test--wait-status))

(defun opensandbox-test--bytes (path)
  "The bytes of sandbox file PATH."
  (opensandbox--read-bytes (opensandbox-sandbox-id) path))

(defun opensandbox-test--put (path bytes)
  "Write BYTES (unibyte) to sandbox file PATH."
  (opensandbox--write-bytes (opensandbox-sandbox-id) path bytes))

(defun opensandbox-test--unibyte (&rest parts)
  "Concatenate PARTS (strings of bytes) into one unibyte string."
  (apply #'unibyte-string (append (apply #'concat parts) nil)))

(defun opensandbox-test--bridge-pid ()
  "PID of the running bridge."
  (opensandbox--connection)
  (process-id (opensandbox--conn-proc opensandbox--conn)))

(defun opensandbox-test--skip (reason)
  "Skip the running test for REASON, printed so the wrapper can show it."
  (message "OSB-SKIP %s: %s" (ert-test-name (ert-running-test)) reason)
  (ert-skip reason))

(defmacro opensandbox-test--with-program (program args &rest body)
  "Run BODY with a fresh bridge spawned as PROGRAM with ARGS, then go back."
  (declare (indent 2))
  `(progn
     (opensandbox-shutdown)
     (unwind-protect
         (let ((opensandbox-bridge-program ,program)
               (opensandbox-bridge-args ,args))
           ,@body)
       (opensandbox-shutdown))))

;;;; Runs

(ert-deftest opensandbox-test-run-output-and-status ()
  "Output lands in *opensandbox*, which ends with the exit status."
  (let ((out (opensandbox-test--run "echo hello; echo oops >&2; exit 3")))
    (should (string-match-p "^\\$ echo hello; echo oops >&2; exit 3\n" out))
    (should (string-match-p "^hello$" out))
    (should (string-match-p "^oops$" out))
    (should (string-match-p "\\[opensandbox\\] exit status 3 ([0-9.]+ s)\n\\'" out)))
  (should (string-match-p "exit status 0" (opensandbox-test--run "true")))
  (should (string-match-p "killed by signal 9" (opensandbox-test--run "kill -9 $$"))))

(ert-deftest opensandbox-test-run-again ()
  "`revert-buffer' in the output buffer runs the last command again."
  (opensandbox-test--run "echo once")
  (with-current-buffer (opensandbox--output-buffer)
    (revert-buffer))
  (let ((out (opensandbox-test--wait-status)))
    (should (string-match-p "\\`\\$ echo once\nonce\n\\[opensandbox\\] exit status 0" out))))

(ert-deftest opensandbox-test-run-stderr-face ()
  "Standard error is shown in its own face."
  (opensandbox-test--run "echo to-stderr >&2")
  (with-current-buffer (opensandbox--output-buffer)
    (goto-char (point-min))
    (should (search-forward "\nto-stderr" nil t))
    (should (eq (get-text-property (1+ (match-beginning 0)) 'face) 'opensandbox-stderr))))

(defun opensandbox-test--time-first-output (command)
  "Milliseconds from `opensandbox-run' COMMAND to its first output in the buffer.
An `after-change-functions' hook stamps the insertion, so the polling of
this test adds nothing."
  (let* ((buf (opensandbox--output-buffer))
         hit
         (hook (lambda (beg end _len)
                 (when (and (not hit) (> end beg)
                            (not (string-prefix-p "$ " (buffer-substring-no-properties beg end))))
                   (setq hit (float-time)))))
         (t0 (float-time)))
    (with-current-buffer buf (add-hook 'after-change-functions hook nil t))
    (unwind-protect
        (progn
          (opensandbox-run command)
          (should (opensandbox-test--wait (lambda () hit)))
          (opensandbox-test--wait-status))
      (with-current-buffer buf (remove-hook 'after-change-functions hook t)))
    (should (string-match-p "^hello$" (opensandbox-test--out)))
    (* 1000 (- hit t0))))

(ert-deftest opensandbox-test-measure-first-output ()
  "Measure: command to first output in the buffer, for echo hello."
  (opensandbox-sandbox-id)                ; warm: bridge and sandbox exist
  (let (samples)
    (dotimes (_ 20)
      (push (opensandbox-test--time-first-output "echo hello") samples))
    (setq samples (sort samples #'<))
    (message "OSB-MEASURE emacs %s run-first-output-ms median=%.1f min=%.1f max=%.1f n=%d"
             (if opensandbox-test-url "remote" "local")
             (nth (/ (length samples) 2) samples) (car samples) (car (last samples))
             (length samples)))
  ;; The same with the traffic log off (`opensandbox-log-size' 0), side by side.
  (opensandbox-shutdown)
  (let ((opensandbox-log-size 0) samples)
    (opensandbox-sandbox-id)
    (dotimes (_ 20)
      (push (opensandbox-test--time-first-output "echo hello") samples))
    (setq samples (sort samples #'<))
    (message "OSB-MEASURE emacs %s run-first-output-ms-log-off median=%.1f min=%.1f max=%.1f n=%d"
             (if opensandbox-test-url "remote" "local")
             (nth (/ (length samples) 2) samples) (car samples) (car (last samples))
             (length samples)))
  ;; Cold: the bridge is spawned, initialized and a sandbox created first.
  (opensandbox-shutdown)
  (should-not opensandbox--sandbox-id)
  (message "OSB-MEASURE emacs %s run-first-output-cold-ms %.1f"
           (if opensandbox-test-url "remote" "local")
           (opensandbox-test--time-first-output "echo hello")))

(ert-deftest opensandbox-test-run-streams ()
  "With a streaming bridge, output shows before the command has ended."
  (unless (opensandbox-bridge-feature-p "stream")
    (opensandbox-test--skip "the bridge lists no `stream' feature in server/health (issue 9)"))
  (opensandbox-run "echo first; sleep 2; echo second")
  (should (opensandbox-test--wait
           (lambda () (string-match-p "^first$" (opensandbox-test--out))) 5))
  (should-not (string-match-p "^second$" (opensandbox-test--out)))
  (should (string-match-p "^second\n\\[opensandbox\\] exit status 0"
                          (opensandbox-test--wait-status))))

(ert-deftest opensandbox-test-run-buffer ()
  "A buffer runs with the interpreter of its major mode, or of its shebang."
  (with-temp-buffer
    (insert "import sys\nprint('py', sys.version_info[0])\n")
    (python-mode)
    (should (equal (opensandbox--interpreter) '("python3")))
    (opensandbox-run-buffer)
    (let ((out (opensandbox-test--wait-status)))
      (should (string-match-p "^\\$ python3 " out))
      (should (string-match-p "^py 3$" out))
      (should (string-match-p "exit status 0" out))))
  (with-temp-buffer
    (insert "#!/bin/sh -e\necho shebang \"$0\"\nexit 4\n")
    (fundamental-mode)
    (should (equal (opensandbox--interpreter) '("/bin/sh" "-e")))
    (opensandbox-run-buffer)
    (let ((out (opensandbox-test--wait-status)))
      (should (string-match-p "^shebang /tmp/opensandbox-run-" out))
      (should (string-match-p "exit status 4" out))))
  (with-temp-buffer
    (fundamental-mode)
    (should-error (opensandbox-run-buffer) :type 'user-error)))

(ert-deftest opensandbox-test-run-region ()
  "The region runs alone, with the buffer's interpreter."
  (with-temp-buffer
    (insert "print('not me')\nprint(6 * 7)\nprint('nor me')\n")
    (python-mode)
    (goto-char (point-min))
    (forward-line 1)
    (let ((start (point)))
      (forward-line 1)
      (opensandbox-run-region start (point)))
    (let ((out (opensandbox-test--wait-status)))
      (should (string-match-p "^42$" out))
      (should-not (string-match-p "me$" out)))))

(ert-deftest opensandbox-test-stop-cancels ()
  "`opensandbox-stop' cancels the running command through $/cancelRequest."
  (opensandbox-run "sleep 30")
  (sleep-for 0.3)
  (let ((t0 (float-time)))
    (opensandbox-stop)
    (let ((out (opensandbox-test--wait-status 10)))
      (should (string-match-p "^\\[opensandbox\\] cancelled$" out)))
    (should (< (- (float-time) t0) (* 10 opensandbox-test-scale))))
  (should-not opensandbox--active-runs)
  (with-current-buffer (format "*%s events*" opensandbox--log-name)
    (should (string-match-p "\\$/cancelRequest" (buffer-string))))
  ;; The sandbox still works afterwards.
  (should (string-match-p "exit status 0" (opensandbox-test--run "true"))))

;;;; Lisp API

(ert-deftest opensandbox-test-request-api ()
  "`opensandbox-request' takes a string method and a plist, returns the result."
  (let* ((sandbox (opensandbox-sandbox-id))
         (res (opensandbox-request "sandbox/run" (list :sandboxId sandbox
                                                       :argv ["sh" "-c" "printf %s \"$X\""]
                                                       :env (list :X "v1")))))
    (should (equal (plist-get res :stdout) "v1"))
    (should (eql (plist-get res :exitCode) 0))
    (should (eq (plist-get res :success) t)))
  ;; The method reached the bridge as a string, not as null.
  (with-current-buffer (format "*%s events*" opensandbox--log-name)
    (should (string-match-p ":method \"sandbox/run\"" (buffer-string)))))

(ert-deftest opensandbox-test-raw-jsonrpc-string-method ()
  "Emacs 28's jsonrpc.el sends a string method as null (why the package interns it)."
  (when (version<= "29" emacs-version)
    (opensandbox-test--skip "only Emacs 28's jsonrpc.el drops string methods"))
  (let* ((proc (make-process :name "osb-raw" :command (list opensandbox-bridge-program)
                             :connection-type 'pipe :noquery t
                             :stderr (get-buffer-create "*osb-raw stderr*")))
         (conn (make-instance 'jsonrpc-process-connection :name "osb-raw"
                              :events-buffer-scrollback-size nil :process proc)))
    (unwind-protect
        (let ((err (should-error (jsonrpc-request conn "server/health" nil :timeout 10)
                                 :type 'jsonrpc-error)))
          (should (eql (alist-get 'jsonrpc-error-code (cddr err)) -32600))
          (should (string-match-p "method" (alist-get 'jsonrpc-error-message (cddr err))))
          ;; The same method as a symbol works.
          (should (jsonrpc-request conn 'server/health nil :timeout 10)))
      (process-send-eof proc)
      (opensandbox-test--wait (lambda () (not (process-live-p proc))) 5)
      (delete-process proc))))

(ert-deftest opensandbox-test-request-error ()
  "Errors carry data.type and the message."
  (let ((err (should-error (opensandbox-request "sandbox/get" '(:sandboxId "no-such-sandbox"))
                           :type 'opensandbox-error)))
    (should (equal (opensandbox-error-type err) "SandboxNotFoundError"))
    (should (eql (opensandbox-error-code err) -32001))
    (should (equal (plist-get (opensandbox-error-data err) :sandboxId) "no-such-sandbox"))
    (should (string-prefix-p "SandboxNotFoundError: " (opensandbox-error-text err)))
    (should (string-match-p "no-such-sandbox" (opensandbox-error-message err))))
  (let ((err (should-error (opensandbox-request "no/such/method" nil) :type 'opensandbox-error)))
    (should (equal (opensandbox-error-type err) "MethodNotFound")))
  ;; Commands show the same text as a user-error.
  (let ((opensandbox--sandbox-id "no-such-sandbox"))
    (let ((err (should-error (opensandbox-find-file "/etc/hostname") :type 'user-error)))
      (should (string-match-p "SandboxNotFoundError: " (cadr err))))))

(ert-deftest opensandbox-test-async-request ()
  "`opensandbox-async-request' returns an id at once and calls back (ERR RESULT)."
  (let (got1 got2)
    (let ((id (opensandbox-async-request "server/health" nil
                                         (lambda (err res) (setq got1 (list err res))))))
      (should (integerp id)))
    (opensandbox-async-request "sandbox/destroy" '(:sandboxId "nope")
                               (lambda (err res) (setq got2 (list err res))))
    (should (opensandbox-test--wait (lambda () (and got1 got2))))
    (should (null (car got1)))
    (should (memq (plist-get (cadr got1) :ok) '(t :json-false)))
    (should (equal (opensandbox-error-type (car got2)) "SandboxNotFoundError"))))

(ert-deftest opensandbox-test-request-timeout ()
  "A request past its timeout fails with RequestTimeout and is cancelled on the bridge."
  (let* ((t0 (float-time))
         (err (should-error
               (opensandbox-request "sandbox/run"
                                    (list :sandboxId (opensandbox-sandbox-id) :command "sleep 20")
                                    0.5)
               :type 'opensandbox-error)))
    (should (equal (opensandbox-error-type err) "RequestTimeout"))
    (should (< (- (float-time) t0) (* 5 opensandbox-test-scale))))
  (with-current-buffer (format "*%s events*" opensandbox--log-name)
    (should (string-match-p "\\$/cancelRequest" (buffer-string)))))

;;;; Files

(defun opensandbox-test--save-like-local (initial edit)
  "Bytes Emacs writes for a local file holding INITIAL after EDIT, a function."
  (let* ((file (make-temp-file "osb-local-" nil ".txt"))
         (coding-system-for-write 'no-conversion))
    (unwind-protect
        (progn
          (write-region initial nil file nil 'silent)
          (let ((buf (let ((coding-system-for-write nil)) (find-file-noselect file))))
            (with-current-buffer buf
              (let ((coding-system-for-write nil)) (funcall edit) (save-buffer)))
            (kill-buffer buf))
          (with-temp-buffer
            (set-buffer-multibyte nil)
            (insert-file-contents-literally file)
            (buffer-string)))
      (delete-file file))))

(ert-deftest opensandbox-test-save-byte-for-byte ()
  "A sandbox file saved from a buffer arrives as Emacs writes a local file."
  (dolist (case `(("utf8" ,(encode-coding-string "héllo wörld ✓\nzwei\n" 'utf-8))
                  ("crlf" "line one\r\nline two\r\n")
                  ("nofinal" "no final newline")
                  ("latin1" ,(unibyte-string ?c ?a ?f #xe9 ?\n))
                  ("empty" "")))
    (let* ((path (format "/tmp/osb-edit-%s.txt" (car case)))
           (initial (opensandbox-test--unibyte (cadr case)))
           (edit (lambda ()
                   (goto-char (point-max))
                   (insert "añadido")
                   (goto-char (point-min))
                   (insert "top\n"))))
      (opensandbox-test--put path initial)
      (let ((buf (opensandbox-find-file path)))
        (unwind-protect
            (with-current-buffer buf
              (should (equal (buffer-name) (concat "/opensandbox:" path)))
              (should-not (buffer-modified-p))
              (funcall edit)
              (should (buffer-modified-p))
              (save-buffer)
              (should-not (buffer-modified-p))
              (let ((expected (opensandbox-test--save-like-local initial edit))
                    (got (opensandbox-test--bytes path)))
                (should (equal (list (car case) got) (list (car case) expected)))))
          (kill-buffer buf))))))

(ert-deftest opensandbox-test-find-file-final-newline ()
  "The final newline follows `require-final-newline', as for a local file."
  (let ((path "/tmp/osb-final.txt"))
    (opensandbox-test--put path "abc")
    (with-current-buffer (opensandbox-find-file path)
      (setq-local require-final-newline t)
      (goto-char (point-max))
      (insert "d")
      (save-buffer)
      (kill-buffer))
    (should (equal (opensandbox-test--bytes path) "abcd\n"))
    (with-current-buffer (opensandbox-find-file path)
      (setq-local require-final-newline nil)
      (goto-char (point-max))
      (delete-char -1)
      (save-buffer)
      (kill-buffer))
    (should (equal (opensandbox-test--bytes path) "abcd"))))

(ert-deftest opensandbox-test-find-file-mode-and-revert ()
  "The major mode comes from the name; a mode change keeps saving; revert re-reads."
  (let ((path "/tmp/osb-mode.py"))
    (opensandbox-test--put path "x = 1\n")
    (let ((buf (opensandbox-find-file path)))
      (unwind-protect
          (with-current-buffer buf
            (should (derived-mode-p 'python-mode))
            (should (eq (opensandbox-find-file path) buf)) ; same buffer again
            (fundamental-mode)
            (insert "# changed\n")
            (save-buffer)
            (should (equal (opensandbox-test--bytes path) "# changed\nx = 1\n"))
            (opensandbox-test--put path "y = 2\n")
            (revert-buffer t t)
            (should (equal (buffer-string) "y = 2\n"))
            (should-not (buffer-modified-p)))
        (kill-buffer buf)))))

(ert-deftest opensandbox-test-find-new-file ()
  "A file that does not exist yet opens empty and is created on save."
  (let ((path (format "/tmp/osb-new-%d.txt" (random 1000000))))
    (with-current-buffer (opensandbox-find-file path)
      (should (equal (buffer-string) ""))
      (insert "new\n")
      (save-buffer)
      (kill-buffer))
    (should (equal (opensandbox-test--bytes path) "new\n"))))

(ert-deftest opensandbox-test-list-files ()
  "The listing shows a directory's files and opens them."
  (opensandbox-request "sandbox/run" (list :sandboxId (opensandbox-sandbox-id)
                                           :command "mkdir -p /tmp/osb-list/sub && printf 12345 > /tmp/osb-list/five.txt"))
  (with-current-buffer (opensandbox-list-files "/tmp/osb-list")
    (should (derived-mode-p 'opensandbox-files-mode))
    (let ((text (buffer-string)))
      (should (string-match-p "5 five\\.txt" text))
      (should (string-match-p "sub/" text)))
    (goto-char (point-min))
    (search-forward "five.txt")
    (opensandbox-files-open)
    (should (equal (buffer-string) "12345"))
    (kill-buffer)))

(ert-deftest opensandbox-test-path-completion ()
  "Sandbox paths complete from fs/list, component by component."
  (opensandbox-request "sandbox/run" (list :sandboxId (opensandbox-sandbox-id)
                                           :command "mkdir -p /tmp/osb-cpl/subdir && : > /tmp/osb-cpl/file.txt"))
  (setq opensandbox--listing-cache nil)
  (should (equal (sort (all-completions "/tmp/osb-cpl/" #'opensandbox--path-table) #'string<)
                 '("file.txt" "subdir/")))
  (should (equal (try-completion "/tmp/osb-cpl/su" #'opensandbox--path-table) "/tmp/osb-cpl/subdir/"))
  (should (equal (try-completion "/tmp/osb-c" #'opensandbox--path-table) "/tmp/osb-cpl/"))
  (should (test-completion "/tmp/osb-cpl/file.txt" #'opensandbox--path-table))
  (should (equal (completion-boundaries "/tmp/osb-cpl/fi" #'opensandbox--path-table nil "")
                 '(13 . 0))))

(ert-deftest opensandbox-test-upload-download ()
  "Upload and download copy every byte value unchanged."
  (let* ((bytes (apply #'unibyte-string (number-sequence 0 255)))
         (local (make-temp-file "osb-up-"))
         (back (concat local ".back"))
         (remote "/tmp/osb-binary.bin"))
    (unwind-protect
        (progn
          (let ((coding-system-for-write 'no-conversion))
            (write-region (apply #'concat (make-list 50 bytes)) nil local nil 'silent))
          (opensandbox-upload-file local remote)
          (should (equal (opensandbox-test--bytes remote) (apply #'concat (make-list 50 bytes))))
          ;; fs/upload when the backend has host files, else fs/write in base64.
          (with-current-buffer (format "*%s events*" opensandbox--log-name)
            (should (string-match-p (if (opensandbox-bridge-feature-p "upload")
                                        ":method \"fs/upload\""
                                      ":encoding \"base64\"")
                                    (buffer-string))))
          (opensandbox-download-file remote back)
          (should (equal (with-temp-buffer
                           (set-buffer-multibyte nil)
                           (insert-file-contents-literally back)
                           (buffer-string))
                         (apply #'concat (make-list 50 bytes)))))
      (delete-file local)
      (when (file-exists-p back) (delete-file back)))))

;;;; Sandboxes, bridge lifecycle

(ert-deftest opensandbox-test-destroy ()
  "`opensandbox-destroy' destroys the sandbox; the next command makes a new one."
  (let ((old (opensandbox-sandbox-id)))
    (opensandbox-destroy)
    (should-not opensandbox--sandbox-id)
    (should-not (member old opensandbox--created))
    (let ((err (should-error (opensandbox-request "sandbox/get" (list :sandboxId old))
                             :type 'opensandbox-error)))
      (should (equal (opensandbox-error-type err) "SandboxNotFoundError")))
    (should (string-match-p "exit status 0" (opensandbox-test--run "true")))
    (should-not (equal old (opensandbox-sandbox-id)))))

(ert-deftest opensandbox-test-dead-bridge-restarts ()
  "A bridge that dies is reported with its stderr and restarted by the next command."
  (opensandbox-test--run "true")
  (let* ((pid (opensandbox-test--bridge-pid))
         (inhibit-message nil))
    (signal-process pid 'SIGKILL)
    (should (opensandbox-test--wait (lambda () (null opensandbox--conn)) 5))
    (with-current-buffer "*Messages*"
      (should (string-match-p "opensandbox: the bridge was killed by signal 9" (buffer-string))))
    (should (string-match-p "exit status 0" (opensandbox-test--run "echo again")))
    (should-not (eql pid (opensandbox-test--bridge-pid)))))

(ert-deftest opensandbox-test-dead-bridge-fails-running-request ()
  "A request in flight when the bridge dies fails at once with BridgeExited."
  (opensandbox-run "sleep 30")
  (sleep-for 0.3)
  (signal-process (opensandbox-test--bridge-pid) 'SIGKILL)
  (let ((out (opensandbox-test--wait-status 5)))
    (should (string-match-p "^\\[opensandbox\\] error: BridgeExited: the bridge was killed by signal 9"
                            out)))
  (should-not opensandbox--active-runs))

(ert-deftest opensandbox-test-spawn-failures ()
  "Spawn failures are reported at once, with the reason and the bridge's stderr."
  (let* ((dir (make-temp-file "osb-spawn-" t))
         (noexec (expand-file-name "noexec" dir))
         (badarch (expand-file-name "badarch" dir))
         (nointerp (expand-file-name "nointerp" dir))
         (dies (expand-file-name "dies" dir)))
    (unwind-protect
        (progn
          (with-temp-file noexec (insert "#!/bin/sh\nexit 0\n"))
          (set-file-modes noexec #o644)
          ;; An ELF header for another machine (AArch64 on x86-64, else x86-64).
          (let ((coding-system-for-write 'no-conversion))
            (with-temp-file badarch
              (set-buffer-multibyte nil)
              (insert (unibyte-string #x7f ?E ?L ?F 2 1 1 0 0 0 0 0 0 0 0 0 2 0
                                      (if (string-match-p "^aarch64" system-configuration) 62 183)
                                      0))
              (insert (make-string 200 0))))
          (set-file-modes badarch #o755)
          (with-temp-file nointerp (insert "#!/no/such/interpreter\n"))
          (set-file-modes nointerp #o755)
          (with-temp-file dies
            (insert "#!/bin/sh\necho 'fatal: cannot start: boom' >&2\nsleep 0.3\nexit 3\n"))
          (set-file-modes dies #o755)
          (dolist (case `((,(expand-file-name "missing" dir) nil "BridgeSpawnError" "no such file")
                          (,noexec nil "BridgeSpawnError" "not executable")
                          ("osb-no-such-program-on-path" nil "BridgeSpawnError" "not found on exec-path")
                          (,badarch nil "BridgeSpawnError" "wrong architecture")
                          (,nointerp nil "BridgeSpawnError" "interpreter /no/such/interpreter is missing")
                          (,dies nil "BridgeExited"
                                 "exited with status 3; its last stderr lines:\nfatal: cannot start: boom")
                          (,opensandbox-test-bridge ("--no-such-flag") "BridgeExited"
                           "unrecognized option '--no-such-flag'")))
            (opensandbox-test--with-program (nth 0 case) (nth 1 case)
              (let* ((t0 (float-time))
                     (err (should-error (opensandbox-request "server/health" nil)
                                        :type 'opensandbox-error))
                     (took (- (float-time) t0)))
                (should (equal (list (car case) (opensandbox-error-type err))
                               (list (car case) (nth 2 case))))
                (should (string-match-p (regexp-quote (nth 3 case)) (opensandbox-error-text err)))
                (should (< took (* 3 opensandbox-test-scale)))
                ;; Commands show it as a user-error with the same text.
                (let ((uerr (should-error (opensandbox-run "true") :type 'user-error)))
                  (should (string-match-p (regexp-quote (nth 3 case)) (cadr uerr))))))))
      (delete-directory dir t)))
  ;; And the right program works again.
  (should (string-match-p "exit status 0" (opensandbox-test--run "true"))))

(ert-deftest opensandbox-test-log ()
  "The log holds the JSON-RPC traffic and the bridge's stderr."
  (opensandbox-test--with-program opensandbox-test-bridge '("--log-level" "info")
    (opensandbox-test--run "echo logged")
    (opensandbox-show-log)
    (with-current-buffer (format "*%s events*" opensandbox--log-name)
      (let ((text (buffer-string)))
        (should (string-match-p "initialize" text))
        (should (string-match-p ":method \"sandbox/run\"" text))
        (should (string-match-p "^\\[stderr\\] " text))))))

(ert-deftest opensandbox-test-shutdown-destroys-sandboxes ()
  "Stopping the bridge destroys the sandboxes the package created (remote backend)."
  (unless opensandbox-test-url
    (opensandbox-test--skip "local sandboxes live in the bridge process; the exit test covers them"))
  (let ((ids (list (opensandbox-sandbox-id))))
    (let ((opensandbox--sandbox-id nil))
      (push (opensandbox-sandbox-id) ids))
    (opensandbox-shutdown)
    (should-not opensandbox--conn)
    (let ((listed (mapcar (lambda (s) (plist-get s :sandboxId))
                          (plist-get (opensandbox-request "sandbox/list" nil) :sandboxes))))
      (dolist (id ids)
        (should-not (member id listed))))))

(defun opensandbox-test--closed-port ()
  "A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."
  (let* ((p (make-network-process :name "osb-port" :server t :host "127.0.0.1" :service t))
         (port (process-contact p :service)))
    (delete-process p)
    port))

(ert-deftest opensandbox-test-unreachable-server ()
  "An unreachable server is shown as SandboxConnectionError with its message, at once."
  (opensandbox-test--with-program opensandbox-test-bridge nil
    (let* ((opensandbox-url (format "http://127.0.0.1:%d" (opensandbox-test--closed-port)))
           (opensandbox-grpc-port (opensandbox-test--closed-port))
           (t0 (float-time))
           (err (should-error (opensandbox-run "true") :type 'user-error)))
      (should (string-match-p "\\`opensandbox: SandboxConnectionError: .*127\\.0\\.0\\.1"
                              (cadr err)))
      (should (< (- (float-time) t0) (* 10 opensandbox-test-scale))))))

;;;; API key

(defun opensandbox-test--proc-file (pid name)
  "The bytes of /proc/PID/NAME."
  (with-temp-buffer
    (set-buffer-multibyte nil)
    (insert-file-contents-literally (format "/proc/%d/%s" pid name))
    (buffer-string)))

(ert-deftest opensandbox-test-api-key-from-auth-source ()
  "The API key comes from auth-source and reaches the bridge in its environment only."
  (let ((url (getenv "OSB_AUTH_URL"))
        (port (getenv "OSB_AUTH_GRPC_PORT"))
        (key (getenv "OSB_AUTH_KEY")))
    (unless (and url port key)
      (opensandbox-test--skip "needs a server that requires an API key (OSB_AUTH_URL: the remote run)"))
    (require 'auth-source)
    (require 'url-parse)
    (let ((authinfo (make-temp-file "osb-authinfo-")))
      (with-temp-file authinfo
        (insert (format "machine %s login opensandbox password %s\n"
                        (url-host (url-generic-parse-url url)) key)))
      (opensandbox-shutdown)
      (unwind-protect
          (let ((opensandbox-url url)
                (opensandbox-grpc-port (string-to-number port))
                (auth-sources (list authinfo))
                ;; "NAME" alone in process-environment removes NAME for children.
                (process-environment (cons "OPENSANDBOX_API_KEY" process-environment)))
            (auth-source-forget-all-cached)
            ;; Without auth-source the server refuses, and the error says so.
            (let* ((opensandbox-use-auth-source nil)
                   (err (should-error (opensandbox-request "sandbox/create" nil)
                                      :type 'opensandbox-error)))
              (should (equal (opensandbox-error-type err) "OpenSandboxError"))
              (should (eql (plist-get (opensandbox-error-data err) :status) 401)))
            (opensandbox-shutdown)
            (let ((opensandbox-use-auth-source t))
              (should (string-match-p "^keyed$" (opensandbox-test--run "echo keyed")))
              (let ((pid (opensandbox-test--bridge-pid)))
                (should-not (string-match-p (regexp-quote key)
                                            (opensandbox-test--proc-file pid "cmdline")))
                (should (string-match-p (regexp-quote (concat "OPENSANDBOX_API_KEY=" key))
                                        (opensandbox-test--proc-file pid "environ"))))
              (opensandbox-shutdown)))
        (opensandbox-shutdown)
        (delete-file authinfo)))))

(provide 'opensandbox-test)
;;; opensandbox-test.el ends here
