/* The pause process of the built-in pause bundle (/pause_bundle/rootfs/pause):
 * sleeps until SIGINT or SIGTERM, then exits 0, like kata's and Kubernetes'
 * pause. Built static so the bundle's rootfs needs nothing else. busybox
 * cannot serve here: run as /pause it answers "pause: applet not found". */
#include <signal.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

int main(void) {
  struct sigaction sa = {0};
  sa.sa_handler = stop;
  sigaction(SIGINT, &sa, 0);
  sigaction(SIGTERM, &sa, 0);
  for (;;) pause();
}
