"""The GraphQL documents the monday.com actions send (API version 2025-04)."""

BOARD_COLUMNS = """
query BoardColumns($boardId: ID!, $columnIds: [String]) {
  boards(ids: [$boardId]) {
    id
    columns(ids: $columnIds) { id title type settings_str }
  }
}
"""
ITEM_FIELDS = """
fragment ItemFields on Item {
  id
  name
  url
  group { id title }
  column_values(ids: $columnIds) { id text value }
}
"""
GET_ITEMS = (
    """
query GetItems($boardId: ID!, $limit: Int!, $queryParams: ItemsQuery, $columnIds: [String!]) {
  boards(ids: [$boardId]) {
    id
    name
    items_page(limit: $limit, query_params: $queryParams) {
      cursor
      items { ...ItemFields }
    }
  }
}
"""
    + ITEM_FIELDS
)
NEXT_ITEMS = (
    """
query NextItems($cursor: String!, $limit: Int!, $columnIds: [String!]) {
  next_items_page(cursor: $cursor, limit: $limit) {
    cursor
    items { ...ItemFields }
  }
}
"""
    + ITEM_FIELDS
)
CREATE_ITEM = """
mutation CreateItem($boardId: ID!, $groupId: String, $itemName: String!, $columnValues: JSON,
                    $createLabels: Boolean) {
  create_item(board_id: $boardId, group_id: $groupId, item_name: $itemName,
              column_values: $columnValues, create_labels_if_missing: $createLabels) {
    id
    name
    url
    board { id }
    group { id }
  }
}
"""
ITEM_STATE = """
query ItemState($ids: [ID!]) {
  items(ids: $ids) { id name url state board { id } group { id } }
}
"""
