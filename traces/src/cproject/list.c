#include <stdlib.h>
#include "util.h"

lnode *list_push(lnode *head, long v) {
    lnode *n = malloc(sizeof *n);
    n->v = v;
    n->next = head;
    return n;
}

lnode *list_reverse(lnode *head) {
    lnode *prev = NULL;
    while (head) { lnode *n = head->next; head->next = prev; prev = head; head = n; }
    return prev;
}

size_t list_len(const lnode *head) {
    size_t n = 0;
    for (; head; head = head->next) n++;
    return n;
}

void list_free(lnode *head) {
    while (head) { lnode *n = head->next; free(head); head = n; }
}
