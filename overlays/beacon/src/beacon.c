/* beacon: an example prebuilt daemon shipped as a .deb (as a Go or C++ daemon would be).
 * Prints the unit's uptime and process count; --once for the smoke test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int once = 0;
	unsigned interval = 30;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--once") == 0)
			once = 1;
		else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc)
			interval = (unsigned)strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "beacon: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	for (;;) {
		struct sysinfo si;

		if (sysinfo(&si) != 0) {
			perror("beacon: sysinfo");
			return 1;
		}
		printf("beacon: up %ld s, %u processes\n", (long)si.uptime, (unsigned)si.procs);
		fflush(stdout);
		if (once)
			return 0;
		sleep(interval);
	}
}
